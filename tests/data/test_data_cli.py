import argparse
import json

from _data_trees import js_tree, python_tree

from hybridcl.data.cli import add_commands, main
from hybridcl.data.records import read_records


def test_add_commands_registers_data_subcommands():
    parser = argparse.ArgumentParser()
    add_commands(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["data", "stats", "x.jsonl"])
    assert args.func.__name__ == "cmd_stats" and args.files == ["x.jsonl"]
    assert parser.parse_args(["data", "build", "--check"]).check


def test_extract_command_writes_split_files(tmp_path, capsys):
    root = python_tree(tmp_path / "src")
    out = tmp_path / "out" / "py.jsonl.gz"
    assert (
        main(
            [
                "data",
                "extract",
                "--language",
                "python",
                "--from",
                str(root),
                "--out",
                str(out),
                "--valid-fraction",
                "0",
                "--repo",
                "me/proj",
                "--report",
                str(tmp_path / "rep.json"),
                "--no-progress",
            ]
        )
        == 0
    )
    printed = capsys.readouterr().out
    assert "near duplicate" in printed and "wrote 3 train records" in printed
    assert [r.func_name for r in read_records(tmp_path / "out" / "py.train.jsonl.gz")] == [
        "add",
        "Box.get",
        "Box.outer",
    ]
    assert read_records(tmp_path / "out" / "py.valid.jsonl.gz") == []
    assert json.loads((tmp_path / "rep.json").read_text())["near_duplicates"] == 1
    assert main(["data", "stats", str(tmp_path / "out" / "py.train.jsonl.gz")]) == 0
    assert "3 records from 2 files" in capsys.readouterr().out


def test_extract_command_bad_input_is_one_line_error(tmp_path, capsys):
    assert (
        main(["data", "extract", "--language", "cobol", "--from", str(tmp_path), "--out", str(tmp_path / "o.jsonl.gz")])
        == 2
    )
    err = capsys.readouterr().err
    assert err.startswith("error: unsupported language 'cobol'") and err.count("\n") == 1
    (tmp_path / "bad.jsonl").write_text("{oops\n")
    assert main(["data", "stats", str(tmp_path / "bad.jsonl")]) == 2
    assert f"{tmp_path / 'bad.jsonl'}:1: malformed JSON" in capsys.readouterr().err


def test_extract_command_exclude_warns_on_unmatched_path(tmp_path, capsys):
    root = js_tree(tmp_path / "js")
    (root / "src" / "test").mkdir(parents=True)
    (root / "src" / "test" / "more.js").write_text((root / "lib.js").read_text())
    out = tmp_path / "o.jsonl.gz"
    args = [
        "data",
        "extract",
        "--language",
        "javascript",
        "--from",
        str(root),
        "--out",
        str(out),
        "--valid-fraction",
        "0",
        "--no-progress",
    ]
    assert main(args + ["--exclude", "src/test", "--exclude", "src/tset"]) == 0
    captured = capsys.readouterr()
    assert "extract javascript: 2 files, 1 parsed" in captured.out  # src/test/more.js is not walked
    assert captured.err == f"warning: --exclude src/tset matched no path under {root}\n"


def test_extract_command_without_documented_functions_is_an_error(tmp_path, capsys):
    (tmp_path / "a.js").write_text("function f(a) {\n  const b = a;\n  return b;\n}\n")
    out = tmp_path / "o.jsonl.gz"
    assert (
        main(
            ["data", "extract", "--language", "javascript", "--from", str(tmp_path), "--out", str(out), "--no-progress"]
        )
        == 2
    )
    err = capsys.readouterr().err
    assert (
        err.startswith(f"error: {tmp_path}: no javascript functions left after filtering (1 found in 1 files)")
        and err.count("\n") == 1
    )
    assert not (tmp_path / "o.train.jsonl.gz").exists()
