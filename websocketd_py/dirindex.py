"""--dir with --devconsole: a directory's page, its programs linked to their dev console.

A plain GET of `/`, or of any directory under --dir, lists what is in it:
each subdirectory, and each program with a link to its URL, where the dev
console answers. A program that will not run is marked with what is wrong
and the command that fixes it: not executable (`chmod +x`), or a #! line
saved with Windows line endings or naming an interpreter that is not there
(`launching.script_problem`). Hidden names (a leading "."), names no URL can
reach (`endpoints.valid_segment`) and links that lead out of --dir are left
out. Every name is HTML-escaped, every link percent-encoded.
"""

import html
import os
from urllib.parse import quote

from .endpoints import directory_in, valid_segment
from .launching import IS_WINDOWS, script_problem

_STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em; max-width: 55em; line-height: 1.5 }
ul { list-style: none; padding: 0 }
li { margin: .4em 0 }
a { font-family: ui-monospace, monospace; font-size: 1.05em }
.problem { color: #b00020; display: block; margin-left: 1.5em }
"""


def page(root, target):
    """The HTML listing (bytes) of the directory the `decoding.RequestTarget` names under
    --dir `root`, or None if it names no directory there."""
    directory = directory_in(root, target.raw_path)
    if directory is None:
        return None
    shown = "/" + "".join(part + "/" for part in target.path.split("/") if part)
    items = [] if shown == "/" else [f'<li>{_anchor(shown.rsplit("/", 2)[0] + "/", "../")}</li>']
    items += [_item(directory, shown, name) for name in _listed(root, directory)]
    body = "\n".join(items) if items else "<li>No programs here yet.</li>"
    title = _text(f"Programs in {shown}")
    return (f'<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">\n'
            f"<title>{title}</title>\n<style>{_STYLE}</style>\n</head>\n<body>\n"
            f"<h1>{title}</h1>\n<p>Open a program to try it in its dev console.</p>\n"
            f"<ul>\n{body}\n</ul>\n</body>\n</html>\n").encode("utf-8")


def _listed(root, directory):
    """The names in `directory` to list, sorted, without what lies outside the real root."""
    real_root = os.path.realpath(root)
    try:
        names = os.listdir(directory)
    except OSError:
        return []
    listed = []
    for name in names:
        if name.startswith(".") or not valid_segment(name):
            continue
        real = os.path.realpath(os.path.join(directory, name))
        if os.path.commonpath([real, real_root]) == real_root and os.path.exists(real):
            listed.append(name)
    return sorted(listed, key=str.lower)


def _item(directory, shown, name):
    """One list item: a subdirectory, a program, or a program that will not run and why."""
    path = os.path.join(directory, name)
    if os.path.isdir(path):
        return f"<li>{_anchor(shown + name + '/', name + '/')}</li>"
    if not (IS_WINDOWS or os.access(path, os.X_OK)):
        return _broken(f"<span>{_text(name)}</span>", f"not executable: run chmod +x {name}")
    problem = script_problem(path, name)
    if problem is not None:
        return _broken(_anchor(shown + name, name), "; ".join(problem))
    return f"<li>{_anchor(shown + name, name)}</li>"


def _anchor(url_path, text):
    href = quote(url_path.encode("utf-8", "surrogateescape"))
    return f'<a href="{html.escape(href)}">{_text(text)}</a>'


def _broken(name_html, problem):
    return (f'<li class="broken">{name_html}'
            f'<span class="problem">will not run: {_text(problem)}</span></li>')


def _text(text):
    """Text for HTML: escaped, and a name that is not UTF-8 shown with replacement marks."""
    return html.escape(text.encode("utf-8", "surrogateescape").decode("utf-8", "replace"))
