"""`istore import` and `istore export -o -`: true line numbers, what was stored before a
failure, --skip-invalid, gzip and JSON-array files, fine-tuning files imported twice
stored once, exports to standard output."""

from __future__ import annotations

import gzip
import io
from pathlib import Path

import orjson
import pyarrow.parquet as pq
from click.testing import CliRunner

from istore.cli import main
from tests.conftest import interaction

FT = [
    {"messages": [{"role": "user", "content": f"q{i}"}, {"role": "assistant", "content": f"a{i}"}]}
    for i in range(4)
]


def _run(*args: str) -> object:
    return CliRunner().invoke(main, list(args))


def _count(data: Path, where: str = "TRUE") -> int:
    sql = f"SELECT count(*) AS n FROM interactions WHERE {where}"
    r = CliRunner().invoke(main, ["sql", "--data", str(data), "--format", "ndjson", sql])
    return int(orjson.loads(r.stdout)["n"])


def _errors(text: str) -> list[str]:
    """Standard error without the progress bar's label."""
    return [x for x in text.splitlines() if x != "Importing"]


def test_errors_name_the_true_line_and_say_what_was_stored(tmp_path: Path) -> None:
    data, src = tmp_path / "data", tmp_path / "in.jsonl"
    lines = [orjson.dumps(interaction(i)).decode() for i in range(5)]
    lines[2:2] = ["", "   "]  # blank lines count as lines
    lines.append('{"use_case": "support", "messages": [{"role": "robot", "content": "x"}]}')
    lines.append(orjson.dumps(interaction(9)).decode())
    src.write_text("\n".join(lines) + "\n")
    r = CliRunner().invoke(main, ["import", "--data", str(data), str(src)])
    assert r.exit_code == 1
    err = _errors(r.stderr)
    assert err[0].startswith(f"Error: {src}: line 8: messages[0].role: "), err
    assert err[1].startswith(f"Stored 5 new interactions from the records before it (up to {src}: "
                             "line 7).")  # fmt: skip
    assert "--skip-invalid" in err[1]
    assert _count(data) == 5
    src.write_text("\n".join(lines[:3]) + "\n{not json\n")
    r = CliRunner().invoke(main, ["import", "--data", str(data), str(src)])
    assert r.exit_code == 1 and f"{src}: line 4: not valid JSON" in r.stderr


def test_skip_invalid_counts_and_shows_the_first(tmp_path: Path) -> None:
    data, src = tmp_path / "data", tmp_path / "in.jsonl"
    good = [orjson.dumps(interaction(i)).decode() for i in range(4)]
    bad = ['{"use_case": "support"}', "{not json", '{"use_case": "s", "prompt": "x"}'] * 3
    src.write_text("\n".join(good[:2] + bad + good[2:]) + "\n")
    r = CliRunner().invoke(main, ["import", "--data", str(data), "--skip-invalid", str(src)])
    assert r.exit_code == 0, r.output
    assert r.stdout.splitlines()[-1] == (
        f"Imported 4 of 4 interactions into {data}; 9 invalid skipped"
    )
    err = _errors(r.stderr)
    i = err.index("Skipped 9 invalid records, the first:")
    assert err[i + 1].startswith(f"  {src}: line 3: messages: ")
    assert err[i + 2].startswith(f"  {src}: line 4: not valid JSON")
    assert err[i + 3].startswith(f"  {src}: line 5: prompt: not a field")
    assert len(err) - i - 1 == 5
    assert _count(data) == 4


def test_gzip_and_json_array_files(tmp_path: Path) -> None:
    data = tmp_path / "data"
    nd = tmp_path / "a.jsonl.gz"
    nd.write_bytes(gzip.compress(b"".join(orjson.dumps(interaction(i, id=f"g{i}")) + b"\n"
                                          for i in range(3))))  # fmt: skip
    arr = tmp_path / "b.json"
    arr.write_bytes(b"  \n" + orjson.dumps([interaction(i, id=f"a{i}") for i in range(2)]))
    arr_gz = tmp_path / "c.json.gz"
    arr_gz.write_bytes(gzip.compress(orjson.dumps([interaction(0, id="z0")])))
    r = CliRunner().invoke(main, ["import", "--data", str(data), str(nd), str(arr), str(arr_gz)])
    assert r.exit_code == 0, r.output
    assert r.stdout.splitlines()[-1] == f"Imported 6 of 6 interactions into {data}"
    bad = tmp_path / "bad.json"
    bad.write_bytes(orjson.dumps([interaction(5), {"use_case": "x"}]))
    r = CliRunner().invoke(main, ["import", "--data", str(data), str(bad)])
    assert r.exit_code == 1 and f"Error: {bad}: item 1: messages" in r.stderr
    torn = tmp_path / "torn.jsonl.gz"
    torn.write_bytes(
        gzip.compress(b"\n".join(orjson.dumps(interaction(i)) for i in range(50)))[:-30]
    )
    r = CliRunner().invoke(main, ["import", "--data", str(data), str(torn)])
    assert r.exit_code == 1 and "cannot be read" in r.stderr


def test_a_fine_tuning_file_imported_twice_is_stored_once(tmp_path: Path) -> None:
    data, src = tmp_path / "data", tmp_path / "ft.jsonl"
    src.write_bytes(b"".join(orjson.dumps(x) + b"\n" for x in FT + FT[:1]))  # a repeat inside
    args = ["import", "--data", str(data), "--use-case", "sft", str(src)]
    r = CliRunner().invoke(main, args)
    assert r.stdout.splitlines()[-1] == (
        f"Imported 4 of 5 interactions into {data} (1 were already stored)"
    )
    r = CliRunner().invoke(main, args)
    assert r.stdout.splitlines()[-1] == (
        f"Imported 0 of 5 interactions into {data} (5 were already stored)"
    )
    assert _count(data) == 4 and _count(data, "id LIKE 'ft-%'") == 4
    # The same examples in another use case are other interactions (ids are store-wide).
    r = CliRunner().invoke(main, ["import", "--data", str(data), "--use-case", "other", str(src)])
    assert r.exit_code == 0, r.output
    assert _count(data) == 8


def test_export_to_standard_output(tmp_path: Path) -> None:
    data, src = tmp_path / "data", tmp_path / "ft.jsonl"
    src.write_bytes(b"".join(orjson.dumps(x) + b"\n" for x in FT))
    assert _run("import", "--data", str(data), "--use-case", "sft", str(src)).exit_code == 0  # type: ignore[attr-defined]
    r = CliRunner().invoke(main, ["export", "--data", str(data), "-o", "-"])
    assert r.exit_code == 0, r.output
    assert sorted(orjson.loads(x)["messages"][0]["content"] for x in r.stdout.splitlines()) == [
        "q0", "q1", "q2", "q3"
    ]  # fmt: skip
    assert "standard output: 4 rows, sha256 " in r.stderr and "versions {" in r.stderr
    assert not list(tmp_path.glob("*.manifest.json")) and not Path("-").exists()
    r = CliRunner().invoke(main, ["export", "--data", str(data), "--format", "parquet", "-o", "-"])
    assert r.exit_code == 0
    assert pq.read_table(io.BytesIO(r.stdout_bytes)).num_rows == 4
    r = CliRunner().invoke(main, ["export", "--data", str(data), "--split", "0.5", "-o", "-"])
    assert r.exit_code == 2 and "--split writes two files" in r.stderr
