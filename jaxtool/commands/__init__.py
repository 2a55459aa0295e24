"""The command line's one home: every `jaxtool` command's argument parsing.

One module per command (`register(subparsers)` adds its parser; the function it runs imports the
heavy machinery when called), command groups as tables of such modules (`data`, `eval`), the shared
table loader (`_registry`) and the shared model/backend flags (`_model_args`). The logic each
command runs lives in the layers below (`jaxtool.data`, `jaxtool.eval`, `jaxtool.train`, ...).

Importing this package registers the benchmark data readers with the source registry (see
`jaxtool.eval`), so `bfcl:`, `functionchat:`, `apibank:` and `multiwoz:` specs work in every command.
"""

import jaxtool.eval  # noqa: F401 - registers the benchmark sources
