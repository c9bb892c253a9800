#!/bin/bash
# Re-make terminal-recording.{typescript,timing,txt} beside this script (shown in
# docs/operations.md, "Progress"): a backup of the small test corpus (4 containers in
# parallel, reads limited so the progress display is visible), recorded with util-linux
# `script` inside a 100x30 tmux pane; the .txt holds pane captures (one mid-backup frame
# and the final screen).
#
#   npm run build && bash scripts/recording/terminal-recording.sh
#   scriptreplay -t scripts/recording/terminal-recording.timing scripts/recording/terminal-recording.typescript
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
work=/tmp/ploopvault-demo
session=ploopvault-rec-$$
rm -rf "$work"
mkdir -p "$work/bin"
trap 'tmux kill-session -t "$session" 2>/dev/null || true' EXIT

echo "building the small corpus in $work/private ..." >&2
node "$root/dist/scripts/corpus.js" "$work/private" --scale small >/dev/null
rm -f "$work/private/SHA256SUMS"
printf '#!/bin/sh\nexec node %s/dist/src/cli.js "$@"\n' "$root" >"$work/bin/ploopvault"
chmod +x "$work/bin/ploopvault"

cat >"$work/demo.sh" <<EOF
#!/bin/bash
export PATH=$work/bin:\$PATH PLOOPVAULT_CONFIG= PLOOPVAULT_PLOOP=$root/scripts/ploop-offline
cd $work
p() { printf '\033[1m\$ %s\033[0m\n' "\$*"; sleep 0.7; "\$@"; echo; sleep 1; }
p ploopvault init --repo ./repo
p ploopvault backup --repo ./repo --state-dir ./state --all --private-root ./private --parallel 4 --limit-read 40M
p ploopvault backup --repo ./repo --state-dir ./state --all --private-root ./private
p ploopvault snapshots --repo ./repo
EOF
chmod +x "$work/demo.sh"

tmux new-session -d -s "$session" -x 100 -y 30 \
  "script -q --timing=$work/timing -c $work/demo.sh $work/typescript; echo __DONE__; sleep 600"
frame=""
for _ in $(seq 1 600); do
  pane=$(tmux capture-pane -p -t "$session")
  if [ -z "$frame" ] && grep -q "total (4 running).* [3-6][0-9]%" <<<"$pane"; then frame=$pane; fi
  grep -q "__DONE__" <<<"$pane" && break
  sleep 0.2
done
final=$(tmux capture-pane -p -S - -t "$session" | sed '/__DONE__/,$d')

cp "$work/typescript" "$here/terminal-recording.typescript"
cp "$work/timing" "$here/terminal-recording.timing"
{
  echo "# ploopvault: backup of the small test corpus (scripts/recording/terminal-recording.sh)"
  echo "# replay: scriptreplay -t scripts/recording/terminal-recording.timing scripts/recording/terminal-recording.typescript"
  echo
  echo "## the terminal during the first backup (tmux capture-pane, 100x30)"
  echo
  echo "$frame" | sed -e :a -e '/^\n*$/{$d;N;ba' -e '}'
  echo
  echo "## the terminal at the end (the progress lines are erased as containers finish)"
  echo
  echo "$final" | sed -e :a -e '/^\n*$/{$d;N;ba' -e '}'
} >"$here/terminal-recording.txt"
echo "wrote scripts/recording/terminal-recording.{typescript,timing,txt}" >&2
