#!/usr/bin/env bash
# Run handgrad's suite on one torch release, as a user with that release would:
#
#   tools/compat.sh 2.13.0                 # a fresh venv, that torch + its torchvision, the whole suite
#   tools/compat.sh 2.15.0 -m "not slow"   # extra arguments go to pytest
#
# Makes a venv (under $COMPAT_VENVS, default a temporary folder; reused when it already holds that
# torch), installs torch==VERSION with the torchvision built for it, then handgrad[dev], runs the
# suite and prints one line for the table in docs/compatibility.md:
#
#   | 2.13.0+cpu | 0.28.0 | 2026-12-02 | 1750 passed, 0 failed, 30 skipped | 1234 s |
#
# NOTE: the pip cap of this machine (/etc/xdg/pip: torch<=2.14.1) is lifted for this venv only
# (PIP_CONSTRAINT=/dev/null): the release asked for is pinned exactly anyway.
set -uo pipefail
cd "$(dirname "$0")/.."

if [ $# -lt 1 ] || [[ ! "$1" =~ ^2\.[0-9]+\.[0-9]+$ ]]; then
  echo "usage: tools/compat.sh TORCH_VERSION [pytest arguments], e.g. tools/compat.sh 2.13.0" >&2
  exit 2
fi
version=$1
shift

# torchvision built for each torch release (torchvision's own metadata pins or bounds torch)
minor=$(echo "$version" | cut -d. -f2)
case "$version" in
  2.15.*) vision="torchvision==0.29.2" ;;
  2.14.1) vision="torchvision==0.29.1" ;;
  *) if [ "$minor" -ge 4 ] && [ "$minor" -le 14 ]; then vision="torchvision==0.$((minor + 15)).*"
     else echo "compat: no torchvision is known to pair with torch $version; add it to tools/compat.sh" >&2; exit 2; fi ;;
esac

venv="${COMPAT_VENVS:-$(mktemp -d)}/torch-$version"
start=$(date +%s)
export PIP_CONSTRAINT=/dev/null PIP_DISABLE_PIP_VERSION_CHECK=1
if ! "$venv/bin/python" -c "import torch, sys; sys.exit(torch.__version__.split('+')[0] != '$version')" 2>/dev/null; then
  python3 -m venv "$venv" || exit 1
  # NOTE: torch alone first, so that a CPU wheel found on disk (PIP_FIND_LINKS) is the one taken
  "$venv/bin/pip" install -q "torch==$version" || { echo "compat: torch $version did not install" >&2; exit 1; }
  "$venv/bin/pip" install -q "torch==$version" "$vision" || { echo "compat: $vision did not install" >&2; exit 1; }
fi
"$venv/bin/pip" install -q -e ".[dev]" "torch==$version" || { echo "compat: handgrad did not install" >&2; exit 1; }
installed=$(( $(date +%s) - start ))

log="$venv/pytest.log"
"$venv/bin/python" -m pytest -p no:cacheprovider "$@" > "$log" 2>&1
status=$?
summary=$(grep -E "(passed|failed|error|no tests ran).* in [0-9.]+s" "$log" | tail -1 | sed -E 's/^=+ //; s/ in [0-9.]+s.*//')
torch_v=$("$venv/bin/python" -c "import torch; print(torch.__version__)")
vision_v=$("$venv/bin/python" -c "from importlib.metadata import version; print(version('torchvision'))" 2>/dev/null || echo none)
echo "compat: log in $log; installed in ${installed} s"
echo "| $torch_v | $vision_v | $(date -u +%Y-%m-%d) | ${summary:-pytest exit $status} | $(( $(date +%s) - start - installed )) s |"
exit "$status"
