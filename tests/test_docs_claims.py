"""What README.md and ARCHITECTURE.md claim can be traced (issue 27, item 9): every result file they
cite is in the repository (committed, not git-ignored); every block of text holding a measured
number names its result file or says that it was not re-measured and from which commit; the
commands they and the GPU preset show parse with the real CLI."""
from __future__ import annotations

import re
import shlex
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DOCS = ("README.md", "ARCHITECTURE.md")
CITED = re.compile(r"bench/results/[A-Za-z0-9_./-]+")
# numbers that can only come from a measurement: metric values with 3+ decimals, speed-ups,
# weighted kappa, durations in minutes and seconds, memory peaks
MEASURED = re.compile(r"\b0\.\d{3,4}\b|\b\d+(?:\.\d+)?\s?[×x]\s|\bκ\b|\b\d+ min \d+ s\b|\b\d+(?:\.\d+)? GB peak")
PROVENANCE = re.compile(r"bench/results/|not\s+re-measured")


def _blocks(text: str) -> list[str]:
    return [b for b in re.split(r"\n\s*\n", text) if b.strip()]


@pytest.mark.parametrize("doc", DOCS)
def test_every_cited_result_file_is_in_the_repository(doc):
    cited = sorted({m.rstrip(".,;:)`") for m in CITED.findall((REPO / doc).read_text())})
    assert cited, f"{doc} cites no result file"
    for path in cited:
        assert (REPO / path).exists(), f"{doc} cites {path}, which is not in the repository"
        ignored = subprocess.run(["git", "check-ignore", "-q", path], cwd=REPO).returncode == 0
        assert not ignored, f"{path} is git-ignored: it would not be committed"


@pytest.mark.parametrize("doc", DOCS)
def test_every_measured_number_names_its_source(doc):
    """A block (paragraph, list item run, table) with a measured number cites a committed result
    file, or says "not re-measured" (with the commit it comes from), itself or in the block before."""
    blocks = _blocks((REPO / doc).read_text())
    bad = []
    for i, b in enumerate(blocks):
        if b.lstrip().startswith("```"):
            continue  # code and example output
        if MEASURED.search(b) and not PROVENANCE.search(b) and not (i and PROVENANCE.search(blocks[i - 1])):
            bad.append(b.strip()[:160])
    assert bad == [], "\n---\n".join(bad)


def test_results_are_not_ignored_by_git():
    probe = "bench/results/some_bench.json"
    assert subprocess.run(["git", "check-ignore", "-q", probe], cwd=REPO).returncode != 0


def _usage(path: Path) -> list[str]:
    """The `grouprank ...` command in a file's comment header, continuation lines joined."""
    lines, cmd = path.read_text().splitlines(), []
    for ln in lines:
        t = ln.lstrip("# ").rstrip()
        if cmd or t.startswith("grouprank "):
            cmd.append(t.rstrip("\\").strip())
            if not t.endswith("\\"):
                break
    return shlex.split(" ".join(cmd))


def test_the_gpu_presets_usage_line_parses_with_the_real_cli(capsys):
    from grouprank.cli import build_parser
    argv = _usage(REPO / "configs" / "reranker" / "qwen2.5-7b-grouprank-train.yaml")
    assert argv[:2] == ["grouprank", "train-reranker"]
    args = build_parser().parse_args(argv[1:])  # exits (SystemExit) on an option that does not exist
    assert args.config.endswith("qwen2.5-7b-grouprank-train.yaml")
    text = (REPO / "configs" / "reranker" / "qwen2.5-7b-grouprank-train.yaml").read_text()
    assert "tested shape" not in text  # it never ran: no claim that it was tested
