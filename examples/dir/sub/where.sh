#!/usr/bin/env bash
# --dir example in a subdirectory: shows how the URL is split.
#
#   websocketd-py --port=8080 --dir=examples/dir
#   # connect to ws://localhost:8080/sub/where.sh/extra/path?x=1 and get
#   #   SCRIPT_NAME=/sub/where.sh     (the script that was picked)
#   #   PATH_INFO=/extra/path         (whatever followed it in the URL)
#   #   QUERY_STRING=x=1              (after the "?", still %-encoded)
echo "SCRIPT_NAME=$SCRIPT_NAME"
echo "PATH_INFO=$PATH_INFO"
echo "QUERY_STRING=$QUERY_STRING"
