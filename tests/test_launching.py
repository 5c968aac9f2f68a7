"""Finding and starting COMMAND the Windows way, unit-tested on any OS with a fake `Platform`.

Nothing here has run on a real Windows machine: cmd.exe's parsing is checked
against a model of its documented rules (`cmd_reads`), not against cmd.exe.
"""

import dataclasses
import importlib.util
import subprocess
import sys

import pytest

from websocketd_py import environment, launching
from websocketd_py.config import Config, UsageError

from helpers import make_request

PYTHON = r"C:\Python312\python.exe"
COMSPEC = r"C:\Windows\system32\cmd.exe"
CWD = r"C:\srv"
BIN = r"C:\bin"


def windows(*files, first_lines=None, directories=()):
    """A Windows `Platform` whose disk holds `files` (and `directories`), and PATH = C:\\bin."""
    first_lines = first_lines or {}
    return launching.Platform(
        is_windows=True, pathext=(".com", ".exe", ".bat", ".cmd"), path=(BIN,), cwd=CWD,
        is_file=set(files).__contains__, is_dir=set(directories).__contains__,
        read_first_line=lambda path: first_lines.get(path, b""),
        python=PYTHON, comspec=COMSPEC)


def cmd_reads(command_line):
    """What `cmd /d /v:off /s /c "..."` runs, by cmd.exe's documented rules: [script, %~1, ...].

    /s: the outer quotes are removed and the rest is run as it is. A `"`
    toggles quoting; outside quotes `& | < > ^ ( )` are operators (the test
    fails if one is there) and space, tab, `,` `;` `=` separate batch
    parameters; `%~N` is parameter N without its surrounding quotes.
    """
    prefix = subprocess.list2cmdline([COMSPEC, "/d", "/v:off", "/s", "/c"]) + ' "'
    assert command_line.startswith(prefix) and command_line.endswith('"')
    inner = command_line[len(prefix):-1]
    assert "%" not in inner, f"cmd.exe would expand % in {inner}"
    words, word, quoted = [], None, False
    for char in inner:
        if char == '"':
            quoted = not quoted
        elif not quoted and char in " \t,;=":
            if word is not None:
                words.append(word)
            word = None
            continue
        assert quoted or char not in "&|<>^()", f"{char!r} outside quotes in {inner}"
        word = (word or "") + char
    assert not quoted, f"unbalanced quotes in {inner}"
    if word is not None:
        words.append(word)
    return [w[1:-1] if len(w) >= 2 and w[0] == w[-1] == '"' else w for w in words]


# -- resolve_command -------------------------------------------------------------------


def test_a_bare_name_gets_the_pathext_extensions_on_path():
    assert launching.resolve_command("count", windows(r"C:\bin\count.exe")) == r"C:\bin\count.exe"


def test_the_working_directory_comes_before_path():
    platform = windows(r"C:\bin\count.exe", r"C:\srv\count.bat")
    assert launching.resolve_command("count", platform) == r"C:\srv\count.bat"


def test_a_name_with_an_extension_is_found_as_given():
    assert launching.resolve_command("count.py", windows(r"C:\bin\count.py")) == r"C:\bin\count.py"


def test_a_name_without_extension_prefers_pathext_then_is_taken_as_given():
    assert launching.resolve_command("serve", windows(r"C:\srv\serve")) == r"C:\srv\serve"
    platform = windows(r"C:\srv\serve", r"C:\srv\serve.exe")
    assert launching.resolve_command("serve", platform) == r"C:\srv\serve.exe"


def test_a_name_with_a_directory_is_looked_for_there_only():
    platform = windows(r"C:\srv\tools\run.cmd", r"C:\bin\run.exe")
    assert launching.resolve_command(r".\tools\run", platform) == r"C:\srv\tools\run.cmd"
    assert launching.resolve_command("tools/run", platform) == r"C:\srv\tools\run.cmd"
    assert launching.resolve_command(r"D:\x\run", platform) is None
    assert launching.resolve_command(r"D:\x\run.exe", windows(r"D:\x\run.exe")) == r"D:\x\run.exe"


def test_what_is_missing_is_explained_the_windows_way():
    platform = windows(directories=[r"C:\srv\scripts"])
    assert launching.resolve_command("nothing", platform) is None
    assert launching.explain_missing_command("nothing", platform) == (
        "COMMAND nothing not found in the working directory or on PATH "
        "(also tried with .com, .exe, .bat, .cmd)")
    assert launching.explain_missing_command(r".\nothing", platform) == (
        r"COMMAND .\nothing does not exist (also tried with .com, .exe, .bat, .cmd)")
    assert "--dir=scripts" in launching.explain_missing_command("scripts", platform)


# -- launch_argv -----------------------------------------------------------------------


def test_posix_starts_argv_as_it_is():
    posix = dataclasses.replace(windows(), is_windows=False)
    assert launching.launch_argv(("/srv/run.bat", "a&b"), posix) == ["/srv/run.bat", "a&b"]


@pytest.mark.skipif(sys.platform == "win32", reason="asks this machine's platform: POSIX only")
def test_this_posix_machine_starts_argv_as_it_is():
    assert launching.launch_argv(["/bin/echo", "hi"]) == ["/bin/echo", "hi"]


@pytest.mark.parametrize("program", [r"C:\bin\count.exe", r"C:\bin\OLD.COM"])
def test_exe_and_com_files_run_as_they_are(program):
    assert launching.launch_argv([program, "3"], windows()) == [program, "3"]


def test_py_files_run_with_the_servers_python_whatever_their_first_line():
    platform = windows(first_lines={r"C:\srv\count.py": b"#!/usr/bin/env ruby\n"})
    assert launching.launch_argv([r"C:\srv\count.py", "3", "0.1"], platform) == [
        PYTHON, r"C:\srv\count.py", "3", "0.1"]


@pytest.mark.parametrize("first_line, interpreter", [
    (b"#!/usr/bin/env node\n", [r"C:\bin\node.exe"]),
    (b"#!/usr/bin/perl -w\r\n", [r"C:\bin\perl.exe", "-w"]),
    (b"#! /usr/bin/env -S ruby --disable-gems\n", [r"C:\bin\ruby.exe", "--disable-gems"]),
    (b"#!C:\\Strawberry\\perl\\bin\\perl.exe\r\n", [r"C:\bin\perl.exe"]),
    (b"#!/bin/sh\n", [r"C:\bin\sh.exe"]),
    (b"#!/usr/bin/env bash", [r"C:\bin\bash.exe"]),
    (b"#!/usr/bin/php\n", [r"C:\bin\php.exe"]),
    (b"#!/usr/bin/env python3 -u\n", [PYTHON, "-u"]),
    (b"#!/usr/bin/python\n", [PYTHON]),
])
def test_a_hash_bang_line_names_the_interpreter_found_on_path(first_line, interpreter):
    script = r"C:\srv\count"
    platform = windows(*(rf"C:\bin\{name}.exe" for name in ("node", "perl", "ruby", "sh",
                                                              "bash", "php")),
                       first_lines={script: first_line})
    assert launching.launch_argv([script, "3"], platform) == [*interpreter, script, "3"]


def test_a_hash_bang_interpreter_missing_from_path_is_refused():
    platform = windows(first_lines={r"C:\srv\count.rb": b"#!/usr/bin/env ruby\n"})
    with pytest.raises(launching.LaunchError, match="names ruby, which is not found"):
        launching.launch_argv([r"C:\srv\count.rb"], platform)


def test_a_hash_bang_interpreter_outside_the_list_is_refused():
    platform = windows(r"C:\bin\awk.exe", first_lines={r"C:\srv\sum": b"#!/usr/bin/awk -f\n"})
    with pytest.raises(launching.LaunchError, match=r"names awk.*websocketd-py awk C:\\srv\\sum"):
        launching.launch_argv([r"C:\srv\sum"], platform)


@pytest.mark.parametrize("first_line", [b"", b"puts 1\n", b"\xef\xbb\xbf#!/usr/bin/ruby\n",
                                        b"#!\n"])
def test_a_file_with_no_way_to_run_it_is_refused(first_line):
    platform = windows(r"C:\bin\ruby.exe", first_lines={r"C:\srv\count.rb": first_line})
    with pytest.raises(launching.LaunchError, match="no #! line"):
        launching.launch_argv([r"C:\srv\count.rb"], platform)


# -- .bat and .cmd through cmd.exe -----------------------------------------------------

BATCH_ARGS = ["plain", "two words", "", "a&b", "x|y", "<in>", "out>", "^caret", "(group)",
              "comma,semi;equals=", "tab\there", "!bang!", "trailing\\", r"C:\my dir\f.txt",
              "ünïcödé", "#$*+-./:?@_"]


@pytest.mark.parametrize("script", [r"C:\srv\run.bat", r"C:\my scripts & more\RUN.CMD"])
def test_a_batch_file_gets_every_argument_as_given(script):
    line = launching.launch_argv([script, *BATCH_ARGS], windows())
    assert isinstance(line, str)  # a command line for CreateProcess, not a list to re-quote
    assert cmd_reads(line) == [script, *BATCH_ARGS]


@pytest.mark.parametrize("arg", ["50%", "%PATH%", 'say "hi"', "line\nbreak", "cr\r", "nul\0"])
def test_a_batch_argument_cmd_would_interpret_is_refused(arg):
    with pytest.raises(launching.LaunchError, match="cannot pass .* to the batch file"):
        launching.launch_argv([r"C:\srv\run.bat", "fine", arg], windows())


def test_a_batch_file_whose_path_cmd_would_expand_is_refused():
    with pytest.raises(launching.LaunchError, match="cmd.exe would interpret '%'"):
        launching.launch_argv([r"C:\srv\100%\run.cmd"], windows())


def test_the_model_of_cmd_catches_an_unquoted_operator():
    """`cmd_reads` itself can fail: a line with a bare & is caught."""
    prefix = subprocess.list2cmdline([COMSPEC, "/d", "/v:off", "/s", "/c"])
    with pytest.raises(AssertionError, match="outside quotes"):
        cmd_reads(prefix + ' ""C:\\srv\\run.bat" a&b"')


# -- wiring: start-up checks, the child's environment, import ------------------------


def test_startup_refuses_a_command_windows_cannot_start(monkeypatch):
    platform = windows(r"C:\srv\run.bat", r"C:\srv\count.rb")
    monkeypatch.setattr(launching, "current_platform", lambda: platform)
    assert Config(command=("run.bat", "ok")).validate().command == (r"C:\srv\run.bat", "ok")
    with pytest.raises(UsageError, match="cannot pass '%TEMP%'"):
        Config(command=("run.bat", "%TEMP%")).validate()
    with pytest.raises(UsageError, match="count.rb on Windows: .* no #! line"):
        Config(command=("count.rb",)).validate()
    with pytest.raises(UsageError, match="not found in the working directory or on PATH"):
        Config(command=("missing",)).validate()


def launching_imported_on_windows(monkeypatch):
    """A fresh copy of launching, imported with sys.platform saying win32."""
    monkeypatch.setattr(sys, "platform", "win32")
    spec = importlib.util.spec_from_file_location("launching_on_windows", launching.__file__)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_importing_on_windows_runs_no_posix_only_call(monkeypatch):
    module = launching_imported_on_windows(monkeypatch)
    assert module.IS_WINDOWS and module.current_platform().is_windows
    assert {"PATH", "PATHEXT", "SYSTEMROOT", "COMSPEC"} <= set(module.DEFAULT_PASSENV)


def test_python_children_on_windows_write_utf8_unless_passenv_says_otherwise(monkeypatch):
    monkeypatch.setattr(launching, "CHILD_ENVIRONMENT",
                        launching_imported_on_windows(monkeypatch).CHILD_ENVIRONMENT)
    assert environment.build(make_request(), (), {})["PYTHONIOENCODING"] == "utf-8"
    passed = environment.build(make_request(), ("PYTHONIOENCODING",),
                               {"PYTHONIOENCODING": "cp1252"})
    assert passed["PYTHONIOENCODING"] == "cp1252"
