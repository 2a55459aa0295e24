"""Evaluation: BFCL (`bfcl/`), dialogue flows (`dialog`, FunctionChat-Bench and DiaTool-DPO data),
API-Bank (`apibank`) and MultiWOZ DST (`multiwoz`), each beside the reader of its data
(`bfcl/data`, `functionchat_data`, `apibank_data`, `multiwoz_data`).

Importing this package registers those readers with the data layer's source registry, so
`bfcl:`, `functionchat:`, `apibank:` and `multiwoz:` specs resolve wherever `name:path` specs are
accepted (`jaxtool data inspect`, `--seeds`, `--guard-bench`, `data.train=`); `jaxtool.data` never
imports `jaxtool.eval`.
"""

from jaxtool.data.sources import register as _register

EVAL_SOURCES = {
    "bfcl": "jaxtool.eval.bfcl.data:load",
    "functionchat": "jaxtool.eval.functionchat_data:load",
    "apibank": "jaxtool.eval.apibank_data:load",
    "multiwoz": "jaxtool.eval.multiwoz_data:load",
}

for _name, _target in EVAL_SOURCES.items():
    _register(_name, _target)
