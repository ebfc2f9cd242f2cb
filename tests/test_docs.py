"""The user docs as a reader follows them: every `deepshield` command in their shell blocks is one the CLI
takes (its command, options and choices; a training key it sets exists), and every link between them lands
on a file and a heading that exist. Cheap: nothing runs, so option names and headings cannot drift apart
from the code unseen (the Python example runs in test_python_api)."""

from __future__ import annotations

import argparse
import contextlib
import io
import re
import shlex
from pathlib import Path

import pytest

from deepshield.cli.main import build_parser
from deepshield.serving.settings import ServerSettings, env_name

ROOT = Path(__file__).resolve().parents[1]
USER_DOCS = [
    "README.md",
    "docs/integration.md",
    "docs/ray.md",
    "docs/mlrun.md",
    "docs/synthetic-faces.md",
    "docs/shipped-model.md",
    "docs/training-config.md",
]


def fenced_blocks(text: str) -> list[tuple[str, str]]:
    """(language, body) of each fenced block, fences matched in order (a bare ``` closes one)."""
    blocks, body, language = [], None, ""
    for line in text.splitlines():
        if line.strip().startswith("```"):
            if body is None:
                body, language = [], line.strip()[3:]
            else:
                blocks.append((language, "\n".join(body)))
                body = None
        elif body is not None:
            body.append(line)
    return blocks


def shell_commands(text: str) -> list[str]:
    """The arguments of every `deepshield ...` in the shell blocks, continuation lines joined, comments,
    `&&` chains and pipes split off."""
    commands = []
    for language, body in fenced_blocks(text):
        if language not in ("", "bash", "sh"):
            continue
        for line in body.replace("\\\n", " ").splitlines():
            line = line.split(" #", 1)[0].strip()
            if line.startswith("#"):
                continue
            for part in re.split(r"&&|\|(?![^\[]*\])", line):  # a '|' inside [a|b] is a choice, not a pipe
                if found := re.search(r"(?:^|\s|/)deepshield\s+([a-z].*)$", part.strip()):
                    commands.append(found.group(1))
    return commands


def as_argv(command: str) -> list[str]:
    """A command as typed: optional parts ([--json]) given, placeholders (<repo>) a word, '...' dropped."""
    command = re.sub(r"<[^>]*>", "X", re.sub(r"\[([^\]|]*)\]", r"\1", command))
    return [word for word in shlex.split(command) if word != "..."]


DOC_COMMANDS = [(name, command) for name in USER_DOCS for command in shell_commands((ROOT / name).read_text())]


def test_the_docs_hold_the_commands_this_test_reads():
    counted = {name: sum(1 for doc, _ in DOC_COMMANDS if doc == name) for name in USER_DOCS}
    assert counted["README.md"] >= 40 and counted["docs/ray.md"] >= 4, counted
    assert {as_argv(command)[0] for _, command in DOC_COMMANDS} >= {"scan", "train", "evaluate", "calibrate", "tune"}


def command_parser(argv: list[str]) -> argparse.ArgumentParser:
    """The (sub)parser that reads `argv`'s options: `dataset stats` is the `stats` parser of `dataset`."""
    parser = build_parser()
    for word in argv:
        commands = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
        if not commands or word not in commands[0].choices:
            break
        parser = commands[0].choices[word]
    return parser


@pytest.mark.parametrize(("doc", "command"), DOC_COMMANDS, ids=[f"{d}:{c[:60]}" for d, c in DOC_COMMANDS])
def test_every_command_in_the_docs_is_one_the_cli_takes(doc, command):
    from deepshield.tuning.space import config_leaf_keys

    argv = as_argv(command)
    errors = io.StringIO()
    try:
        with contextlib.redirect_stderr(errors):
            args = build_parser().parse_args(argv)
    except SystemExit:
        pytest.fail(f"{doc}: deepshield {command}\n{errors.getvalue().strip()}")
    # by its own name: argparse takes a prefix (--heatmap for --heatmaps) until an option shares it
    options = {name for action in command_parser(argv)._actions for name in action.option_strings}
    abbreviated = [word.partition("=")[0] for word in argv if word.startswith("--")]
    assert set(abbreviated) <= options, f"{doc}: deepshield {command}: not an option {set(abbreviated) - options}"
    settings = [*getattr(args, "overrides", []), *getattr(args, "trial_overrides", [])]
    unknown = [key for setting in settings if (key := setting.partition("=")[0]) not in config_leaf_keys()]
    assert not unknown, f"{doc}: deepshield {command}: no training-config key {unknown}"


def heading_anchors(text: str) -> set[str]:
    """GitHub's anchors for a Markdown file's headings (lower case, punctuation dropped, spaces to '-',
    repeats numbered), fenced blocks left out."""
    anchors: set[str] = set()
    seen: dict[str, int] = {}
    inside = False
    for line in text.splitlines():
        if line.strip().startswith("```"):
            inside = not inside
        elif not inside and (heading := re.match(r"#+\s+(.*)", line)):
            slug = re.sub(r"[^\w\- ]", "", heading.group(1).strip().lower()).replace(" ", "-")
            anchors.add(f"{slug}-{seen[slug]}" if slug in seen else slug)
            seen[slug] = seen.get(slug, 0) + 1
    return anchors


DOC_LINKS = [
    (name, link)
    for name in USER_DOCS
    for link in re.findall(r"\]\(([^)\s]+)\)", (ROOT / name).read_text())
    if not link.startswith(("http://", "https://", "mailto:"))
]


def test_every_link_in_the_docs_lands_on_a_file_and_heading_that_exist():
    assert len(DOC_LINKS) >= 30  # the README alone links docs/ and its own sections some forty times
    broken = []
    for doc, link in DOC_LINKS:
        path, _, anchor = link.partition("#")
        target = (ROOT / doc).parent / path if path else ROOT / doc
        if not target.exists():
            broken.append(f"{doc}: {link} (no such file)")
        elif anchor and target.suffix == ".md" and anchor not in heading_anchors(target.read_text()):
            broken.append(f"{doc}: {link} (no such heading in {target.relative_to(ROOT)})")
    assert not broken, "\n".join(broken)


def test_every_server_setting_is_documented_by_its_variable():
    """A setting the README does not name can only be found in the code: each appears as its
    DEEPSHIELD_ variable, or as its bare name in the Reliability table (`HEADER_TIMEOUT_S`)."""
    readme = (ROOT / "README.md").read_text()
    undocumented = [
        env_name(field)
        for field in ServerSettings.model_fields
        if env_name(field) not in readme and f"`{field.upper()}`" not in readme
    ]
    assert not undocumented, f"README names no {', '.join(undocumented)}"


def test_the_training_configuration_reference_is_the_code_s():
    """Every training key, and no other, in docs/training-config.md, with the default, values and description
    TrainConfig gives it: a key without a word in the docs could only be found in the code."""
    from deepshield.training.reference import render
    from deepshield.tuning.space import config_leaf_keys

    page = (ROOT / "docs/training-config.md").read_text()
    listed = set(re.findall(r"^\| `([\w.]+)` \|", page, re.MULTILINE))
    regenerate = "regenerate it: python -m deepshield.training.reference > docs/training-config.md"
    missing, stale = sorted(config_leaf_keys() - listed), sorted(listed - config_leaf_keys())
    assert not missing and not stale, f"docs/training-config.md lacks {missing}, names no key {stale}: {regenerate}"
    assert page == render(), f"docs/training-config.md is out of date (a default, values or description): {regenerate}"
