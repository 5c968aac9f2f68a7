#!/usr/bin/env python3
# A CGI script with an HTML form that sends its fields back to itself.
#
#   websocketd-py --port=8080 --cgidir=examples/cgi
#   # open http://localhost:8080/form.py
#
# The form uses GET, so the fields arrive in the QUERY_STRING variable
# (e.g. "name=Ann&colour=blue"), still %-encoded: parse_qs decodes them.
import html
import os
from urllib.parse import parse_qs

fields = parse_qs(os.environ.get("QUERY_STRING", ""))
name = fields.get("name", [""])[0]

# Headers, an empty line, then the page. Everything we print is sent
# when the script exits, so no flushing is needed here.
print("Content-Type: text/html; charset=utf-8")
print()
print("<!DOCTYPE html><title>CGI form</title>")
print('<form method="get"><input name="name" placeholder="your name"> <button>Send</button></form>')
if name:
    # html.escape() so that a "name" like <script> is shown, not run.
    print(f"<p>Hello, {html.escape(name)}!</p>")
