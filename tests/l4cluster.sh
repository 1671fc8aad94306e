#!/bin/sh
# l4cluster.sh - a throwaway Redis Cluster on loopback (three masters, three
# replicas) for the L4 tests and benchmarks.
#
#   l4cluster.sh start DIR [BASEPORT]  start six nodes on BASEPORT..+5 (a free
#                                      range when absent), create the cluster,
#                                      wait until it is ok and the replicas are
#                                      in sync; prints BASEPORT
#   l4cluster.sh stop DIR              stop every node started in DIR (TERM,
#                                      then KILL after 3 s); never fails
#   l4cluster.sh kill DIR PORT         SIGKILL the node on PORT
#   l4cluster.sh wait DIR [SECONDS]    wait until every live node reports
#                                      cluster_state:ok (default 30 s)
#   l4cluster.sh sync DIR [SECONDS]    wait until every replica has all of its
#                                      master's writes (default 10 s)
#   l4cluster.sh masters DIR           ports of the live masters, one a line
#   l4cluster.sh cli DIR PORT ARGS...  redis-cli on PORT (with the password)
#
# DIR must exist; each node gets DIR/PORT/ (nodes.conf, redis.log, pid) and
# DIR/ports lists the ports.  Environment: L4CLUSTER_PASSWORD (requirepass
# and masterauth of every node), L4CLUSTER_NODE_TIMEOUT (ms, default 2000,
# low so that a killed master fails over in seconds), L4CLUSTER_OWNER (a
# pid: the nodes are stopped when it exits, so that a test that crashes
# leaves no server behind).
# Exit status 77 when redis-server or redis-cli is not installed.
set -eu

cmd=${1:-}
dir=${2:-}
[ -n "$cmd" ] && [ -n "$dir" ] || {
	echo "usage: l4cluster.sh start|stop|kill|wait|sync|masters|cli DIR ..." >&2
	exit 2
}
command -v redis-server >/dev/null 2>&1 && command -v redis-cli >/dev/null 2>&1 ||
	{ echo "l4cluster: redis-server not installed" >&2; exit 77; }

pw=${L4CLUSTER_PASSWORD:-}
cli() { # cli PORT ARGS...
	p=$1
	shift
	if [ -n "$pw" ]; then
		redis-cli -h 127.0.0.1 -p "$p" -a "$pw" --no-auth-warning "$@"
	else
		redis-cli -h 127.0.0.1 -p "$p" "$@"
	fi
}

ports() { cat "$dir/ports" 2>/dev/null || true; }

alive() { # alive PORT: the node's process runs
	[ -f "$dir/$1/pid" ] && kill -0 "$(cat "$dir/$1/pid")" 2>/dev/null
}

# A base port whose six ports and six cluster-bus ports (+10000) are unused,
# below the ephemeral range so that no outgoing connection takes one.
free_base() {
	used=$(ss -Htan 2>/dev/null | awk '{ n = split($4, a, ":"); print a[n] }' | sort -u)
	tries=0
	while [ "$tries" -lt 50 ]; do
		b=$(( 10000 + ($$ * 7 + tries * 131 + $(date +%N | sed 's/^0*//;s/^$/0/') % 997) % 9000 ))
		ok=1
		for i in 0 1 2 3 4 5; do
			for p in $((b + i)) $((b + i + 10000)); do
				if printf '%s\n' "$used" | grep -qx "$p"; then
					ok=0
				fi
			done
		done
		[ "$ok" -eq 1 ] && { echo "$b"; return 0; }
		tries=$((tries + 1))
	done
	echo "l4cluster: no free port range" >&2
	return 1
}

do_stop() {
	for p in $(ports); do
		[ -f "$dir/$p/pid" ] && kill -TERM "$(cat "$dir/$p/pid")" 2>/dev/null || true
	done
	n=0
	while [ "$n" -lt 30 ]; do
		left=0
		for p in $(ports); do
			alive "$p" && left=1
		done
		[ "$left" -eq 0 ] && return 0
		sleep 0.1
		n=$((n + 1))
	done
	for p in $(ports); do
		[ -f "$dir/$p/pid" ] && kill -KILL "$(cat "$dir/$p/pid")" 2>/dev/null || true
	done
	return 0
}

do_wait() { # do_wait SECONDS
	end=$(($(date +%s) + $1))
	while [ "$(date +%s)" -le "$end" ]; do
		ok=1
		for p in $(ports); do
			alive "$p" || continue
			info=$(cli "$p" cluster info 2>/dev/null || true)
			case "$info" in
			*cluster_state:ok*) ;;
			*) ok=0 ;;
			esac
		done
		[ "$ok" -eq 1 ] && return 0
		sleep 0.2
	done
	echo "l4cluster: cluster not ok after $1 s" >&2
	return 1
}

do_sync() { # do_sync SECONDS: every replica's offset reached its master's
	end=$(($(date +%s) + $1))
	while [ "$(date +%s)" -le "$end" ]; do
		ok=1
		for p in $(ports); do
			alive "$p" || continue
			r=$(cli "$p" info replication 2>/dev/null | tr -d '\r')
			case "$r" in
			*role:master*)
				mo=$(printf '%s\n' "$r" | sed -n 's/^master_repl_offset://p')
				for so in $(printf '%s\n' "$r" | sed -n 's/^slave[0-9]*:.*offset=\([0-9]*\).*/\1/p'); do
					[ "$so" = "$mo" ] || ok=0
				done ;;
			*role:slave*)
				case "$r" in *master_link_status:up*) ;; *) ok=0 ;; esac ;;
			esac
		done
		[ "$ok" -eq 1 ] && return 0
		sleep 0.1
	done
	echo "l4cluster: replicas not in sync after $1 s" >&2
	return 1
}

start_nodes() { # start_nodes BASE: 0 when all six answer PING
	base=$1
	: >"$dir/ports"
	for i in 0 1 2 3 4 5; do
		p=$((base + i))
		echo "$p" >>"$dir/ports"
		rm -rf "${dir:?}/$p"
		mkdir -p "$dir/$p"
		set -- --port "$p" --bind 127.0.0.1 --protected-mode no \
			--cluster-enabled yes --cluster-config-file "$dir/$p/nodes.conf" \
			--cluster-node-timeout "${L4CLUSTER_NODE_TIMEOUT:-2000}" \
			--dir "$dir/$p" --daemonize no --save "" --appendonly no \
			--logfile "$dir/$p/redis.log"
		[ -n "$pw" ] && set -- "$@" --requirepass "$pw" --masterauth "$pw"
		redis-server "$@" </dev/null >/dev/null 2>&1 &
		echo $! >"$dir/$p/pid"
	done
	for p in $(ports); do
		n=0
		until [ "$(cli "$p" ping 2>/dev/null)" = PONG ]; do
			alive "$p" || return 1
			n=$((n + 1))
			[ "$n" -gt 100 ] && return 1
			sleep 0.1
		done
	done
	return 0
}

case "$cmd" in
start)
	[ -d "$dir" ] || { echo "l4cluster: $dir: no such folder" >&2; exit 2; }
	attempt=0
	while :; do
		base=${3:-$(free_base)}
		start_nodes "$base" && break
		do_stop
		attempt=$((attempt + 1))
		# A port taken between the check and the bind: another range.
		if [ -n "${3:-}" ] || [ "$attempt" -ge 3 ]; then
			echo "l4cluster: nodes did not start (see $dir/*/redis.log)" >&2
			exit 1
		fi
	done
	if [ -n "${L4CLUSTER_OWNER:-}" ]; then
		owner=$L4CLUSTER_OWNER
		(
			trap '' HUP
			while kill -0 "$owner" 2>/dev/null; do sleep 1; done
			sh "$0" stop "$dir" >/dev/null 2>&1
		) </dev/null >/dev/null 2>&1 &
	fi
	addrs=""
	for p in $(ports); do addrs="$addrs 127.0.0.1:$p"; done
	# shellcheck disable=SC2086
	if ! cli "$(head -n 1 "$dir/ports")" --cluster create $addrs \
		--cluster-replicas 1 --cluster-yes >"$dir/create.log" 2>&1; then
		echo "l4cluster: cluster create failed (see $dir/create.log)" >&2
		do_stop
		exit 1
	fi
	do_wait 30 || { do_stop; exit 1; }
	do_sync 30 || { do_stop; exit 1; }
	echo "$base"
	;;
stop) do_stop ;;
kill)
	p=${3:?port}
	kill -KILL "$(cat "$dir/$p/pid")"
	;;
wait) do_wait "${3:-30}" ;;
sync) do_sync "${3:-10}" ;;
masters)
	for p in $(ports); do
		alive "$p" || continue
		cli "$p" cluster nodes 2>/dev/null | awk '
			$3 ~ /master/ && $3 !~ /fail/ { sub(/@.*/, "", $2); n = split($2, a, ":"); print a[n] }' |
			sort -n
		exit 0
	done
	;;
cli)
	p=${3:?port}
	shift 3
	cli "$p" "$@"
	;;
*)
	echo "l4cluster: unknown command $cmd" >&2
	exit 2
	;;
esac
