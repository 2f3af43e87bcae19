"""``placerl generate RUN_OR_MODEL PROMPT...`` and ``placerl chat RUN_OR_MODEL``: try a
policy after training, with its chat template and end tokens (``policy_session.py``)."""

from __future__ import annotations

import argparse
import sys

from placerl.errors import UserError

GENERATE = (
    "Answer each PROMPT with the policy of a run (its policy/, else its newest checkpoint), a "
    "model directory or a LoRA adapter directory. Prompts go through the tokenizer's chat "
    "template as one user turn (--raw: as given); responses stop at the model's end tokens. "
    "Greedy unless --temperature > 0. With no PROMPT, one prompt per line of standard input."
)
CHAT = (
    "Talk to a policy turn by turn: each line you type is a user turn, the whole conversation "
    "goes through the chat template; /reset forgets it, /exit or end of input leaves."
)


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", metavar="RUN_OR_MODEL", help="run, model or adapter directory")
    parser.add_argument("--max-new-tokens", type=int, default=128, help="default 128")
    parser.add_argument("--temperature", type=float, default=0.0, help="0 (default): greedy")
    parser.add_argument("--top-p", type=float, default=1.0, help="nucleus sampling (default 1)")
    parser.add_argument("--seed", type=int, default=0, help="sampling seed (default 0)")
    parser.add_argument("--system", help="a system turn before the conversation")
    parser.add_argument(
        "--device", choices=("auto", "cpu", "gpu"), default="auto", help="default auto"
    )


def register(sub) -> list[argparse.ArgumentParser]:
    generate = sub.add_parser("generate", help="answer prompts with a trained policy")
    generate.description = GENERATE
    _common(generate)
    generate.add_argument("prompts", nargs="*", metavar="PROMPT", help="prompts to answer")
    generate.add_argument(
        "--raw", action="store_true", help="send the prompt as given, without the chat template"
    )
    generate.set_defaults(fn=run_generate)
    chat = sub.add_parser("chat", help="talk to a trained policy turn by turn", description=CHAT)
    _common(chat)
    chat.set_defaults(fn=run_chat, raw=False)
    return [generate, chat]


def _session(args: argparse.Namespace):
    from placerl.commands.policy_session import Options, PolicySession

    if args.max_new_tokens < 1:
        raise UserError(f"{args.max_new_tokens}: expected >= 1", where="--max-new-tokens")
    if args.temperature < 0 or not 0 < args.top_p <= 1:
        raise UserError("--temperature must be >= 0 and --top-p in (0, 1]", where="--temperature")
    options = Options(
        max_new_tokens=args.max_new_tokens,
        temperature=args.temperature,
        top_p=args.top_p,
        seed=args.seed,
        raw=args.raw,
        system=args.system,
        device=args.device,
    )
    session = PolicySession(args.model, options)
    how = "chat template" if session.chat else "raw text (no chat template)"
    found = f" ({session.found})" if session.found else ""
    print(f"policy {session.path}{found}; prompts as {how}", file=sys.stderr)
    return session


def run_generate(args: argparse.Namespace) -> int:
    prompts = args.prompts or [line.rstrip("\n") for line in sys.stdin if line.strip()]
    if not prompts:
        raise UserError("no prompt given (as arguments or on standard input)", where="generate")
    session = _session(args)
    for prompt in prompts:
        reply = session.reply(prompt).rstrip()  # a template's newline before the end token
        print(reply if len(prompts) == 1 else f"{prompt}\t{reply}", flush=True)
    return 0


def run_chat(args: argparse.Namespace) -> int:
    session = _session(args)
    if not session.chat:
        raise UserError(
            "this tokenizer has no chat template, so there are no turns to keep; use "
            "placerl generate --raw",
            where=str(session.path),
        )
    conversation: list[dict] = []
    while True:
        try:
            line = input("you> ").strip()
        except EOFError:
            return 0
        if line in ("/exit", "/quit"):
            return 0
        if line == "/reset" or not line:
            conversation = [] if line else conversation
            continue
        conversation.append({"role": "user", "content": line})
        reply = session.reply(conversation)
        conversation.append({"role": "assistant", "content": reply})
        print(f"policy> {reply.rstrip()}", flush=True)
