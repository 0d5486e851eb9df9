#!/usr/bin/env bash
# Start an IMap worker server on each remote host over ssh, reached through SSH tunnels.
#
#   scripts/start_remote_servers.sh [options] HOST [HOST ...]
#
#   -n N     worker slots per host in the printed worker_remote (default 2)
#   -p PORT  port of the server on each host, bound to that host's 127.0.0.1 (default 18812)
#   -l PORT  local port of the first tunnel; the i-th host gets PORT+i (default 18812)
#   -P CMD   Python command on the hosts (default python3)
#   -r       run rpyc's own "rpyc_classic --mode forking" instead of "python -m imap.server"
#            (for hosts that have rpyc and dill but not imap installed)
#
# The servers listen on the hosts' loopback only; ssh carries the traffic, so no port is
# open on the network and no TLS is needed. HOST is anything ssh accepts (user@host, an
# alias of ~/.ssh/config); keys must work without a password prompt (BatchMode).
# Once every server listens, the script prints the worker_remote value to use and waits:
# Ctrl-C or SIGTERM closes the tunnels, and each server stops with its ssh session
# (ssh -tt: the session's hang-up stops the server and its forked children).
set -euo pipefail

usage() { sed -n '2,20p' "$0" | sed 's/^# \{0,1\}//'; exit 2; }
slots=2 remote_port=18812 local_port=18812 python=python3 classic=0
while getopts "n:p:l:P:rh" opt; do
    case $opt in
        n) slots=$OPTARG ;;
        p) remote_port=$OPTARG ;;
        l) local_port=$OPTARG ;;
        P) python=$OPTARG ;;
        r) classic=1 ;;
        *) usage ;;
    esac
done
shift $((OPTIND - 1))
[ $# -gt 0 ] || usage

logs=$(mktemp -d)
pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$logs"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

if [ "$classic" = 1 ]; then
    server="exec rpyc_classic --mode forking --host 127.0.0.1 --port $remote_port"
else
    server="exec $python -m imap.server --host 127.0.0.1 --port $remote_port"
fi
i=0
for host in "$@"; do
    ssh -tt -o BatchMode=yes -o ExitOnForwardFailure=yes \
        -L "$((local_port + i)):127.0.0.1:$remote_port" "$host" "$server" \
        </dev/null >"$logs/$i.log" 2>&1 &
    pids+=("$!")
    i=$((i + 1))
done

entries=()
i=0
for host in "$@"; do
    for _ in $(seq 300); do                  # up to 30 s for each server to listen
        grep -q -e "listening on" -e "server started on" "$logs/$i.log" && break
        if ! kill -0 "${pids[$i]}" 2>/dev/null; then
            echo "start_remote_servers: the server on $host did not start:" >&2
            cat "$logs/$i.log" >&2
            exit 1
        fi
        sleep 0.1
    done
    grep -q -e "listening on" -e "server started on" "$logs/$i.log" || {
        echo "start_remote_servers: no answer from the server on $host in 30 s:" >&2
        cat "$logs/$i.log" >&2
        exit 1
    }
    echo "$host: server on its 127.0.0.1:$remote_port, tunnel from 127.0.0.1:$((local_port + i))"
    entries+=("('127.0.0.1:$((local_port + i))', $slots)")
    i=$((i + 1))
done
joined=$(printf ", %s" "${entries[@]}")
echo "worker_remote=[${joined:2}]"
echo "(Ctrl-C stops the servers)"
wait
