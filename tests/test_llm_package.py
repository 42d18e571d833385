"""The public surface of grouprank.llm: every exported name resolves to the object (not to a
submodule of the same name), and importing the package pulls in no HTTP stack."""
import subprocess
import sys
import types

import grouprank.llm as llm


def test_every_public_name_is_an_object_not_a_module():
    import grouprank.llm.client  # noqa: F401  - submodules loaded first: the classic shadowing case
    import grouprank.llm.dry_run  # noqa: F401
    import grouprank.llm.usage  # noqa: F401
    for name in llm.__all__:
        obj = getattr(llm, name)
        assert not isinstance(obj, types.ModuleType), name
        assert callable(obj), name
    from grouprank.llm import estimate, usage_report
    assert estimate.__module__ == "grouprank.llm.dry_run" and usage_report.__module__ == "grouprank.llm.usage"


def test_package_import_is_light():
    code = ("import sys, grouprank.llm, grouprank.llm.keys; "
            "print(sorted(m for m in ('openai', 'httpx', 'aiohttp', 'grouprank.llm.client') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
