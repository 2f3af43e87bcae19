"""The subcommands of ``placerl``, one module each: ``register(sub)`` adds the command's
parser (no heavy imports: building the CLI must not import torch or Ray) and sets ``fn``, the
function that runs it. ``cli.py`` lists them and reports ``UserError`` as one line."""
