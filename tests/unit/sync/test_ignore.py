"""Ignore rules: VCS folders, .pydeskignore globs, file-bind filters."""

from __future__ import annotations

from pathlib import Path

from pydesk.sync.ignore import IgnoreRules


def rules(*lines: str) -> IgnoreRules:
    return IgnoreRules.from_lines(list(lines))


def test_vcs_folders_and_temp_files_are_never_synced() -> None:
    r = rules()
    assert r.ignored(".git", True)
    assert r.ignored(".git/objects/ab", False)
    assert r.ignored("sub/.hg/store", False)
    assert r.ignored(".svn", True)
    assert r.ignored("dir/.pydesk-tmp-1234-x", False)
    assert not r.ignored(".gitignore", False)
    assert not r.ignored("src/main.py", False)


def test_globs_at_any_depth_and_anchored() -> None:
    r = rules("# comment", "", "*.log", "/top.txt", "docs/*.tmp", "**/cache/**")
    assert r.ignored("a.log", False)
    assert r.ignored("deep/er/b.log", False)
    assert r.ignored("top.txt", False)
    assert not r.ignored("sub/top.txt", False)
    assert r.ignored("docs/x.tmp", False)
    assert not r.ignored("other/docs/x.tmp", False)
    assert r.ignored("a/cache/b/c", False)
    assert not r.ignored("a.logx", False)


def test_directory_only_rules_and_their_contents() -> None:
    r = rules("build/")
    assert r.ignored("build", True)
    assert r.ignored("build/out.o", False)
    assert r.ignored("sub/build/out.o", False)
    assert not r.ignored("build", False)  # a file named build is synced


def test_negation_reincludes_but_not_inside_an_ignored_directory() -> None:
    r = rules("*.log", "!keep.log", "out/", "!out/keep.txt")
    assert not r.ignored("keep.log", False)
    assert r.ignored("other.log", False)
    assert r.ignored("out/keep.txt", False)


def test_file_bind_filter_keeps_one_top_level_name() -> None:
    r = IgnoreRules.from_lines([], only="app.conf")
    assert not r.ignored("app.conf", False)
    assert r.ignored("other", False)
    assert r.ignored("dir/app.conf", False)


def test_load_reads_the_root_file(tmp_path: Path) -> None:
    (tmp_path / ".pydeskignore").write_text("node_modules/\n*.pyc\n")
    r = IgnoreRules.load(tmp_path)
    assert r.ignored("node_modules/x/y.js", False)
    assert r.ignored("a/b.pyc", False)
    assert not IgnoreRules.load(tmp_path / "missing").ignored("a/b.pyc", False)


def test_the_guest_matcher_agrees_with_the_host_rules() -> None:
    from pydeskd.syncd.ignore import Matcher

    host = IgnoreRules.from_lines(["*.log", "!keep.log", "build/", "/top", "docs/*.tmp",
                                   "**/cache/**", "[ab]?.c", "node_modules/"])
    guest = Matcher(host.wire())
    paths = ["a.log", "keep.log", "x/keep.log", "build", "build/o", "src/build/o", "top",
             "sub/top", "docs/a.tmp", "x/docs/a.tmp", "a/cache/b", "ab.c", "cb.c",
             "node_modules/x/y", ".git", "x/.hg/y", ".pydesk-tmp-1-x", "src/main.py"]
    for path in paths:
        for is_dir in (False, True):
            assert guest.ignored(path, is_dir) == host.ignored(path, is_dir), (path, is_dir)
    only = IgnoreRules.from_lines([], only="app.conf")
    assert Matcher(only.wire()).ignored("other", False)
    assert not Matcher(only.wire()).ignored("app.conf", False)
