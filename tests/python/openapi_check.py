"""Checks NanoImg's OpenAPI document with openapi-spec-validator (a real OpenAPI 3.1 validator,
pinned in requirements.txt): the structure, every $ref resolving, and every schema valid JSON
Schema 2020-12. Usage: openapi_check.py DOCUMENT.json; prints "ok" or the first problem."""

import json
import sys

from openapi_spec_validator import validate
from openapi_spec_validator.versions import consts, get_spec_version

with open(sys.argv[1], encoding="utf-8") as f:
    doc = json.load(f)
version = get_spec_version(doc)
if version != consts.OPENAPIV31:
    sys.exit(f"the document reads as {version}, not OpenAPI 3.1")
validate(doc)
print("ok")
