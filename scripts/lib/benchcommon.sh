# shellcheck shell=bash
# Helpers the benchmark scripts share (sourced, bash). The sourcing script defines
# `die`, `RESULTS` (the results.tsv path) and the `PIDS` array of processes it started.

record() { # metric mode value
    printf '%s\t%s\t%s\n' "$1" "$2" "$3" >>"$RESULTS"
}

wait_for() { # timeout_s description command...
    local t=$1 what=$2 i
    shift 2
    for ((i = 0; i < t * 10; i++)); do
        "$@" >/dev/null 2>&1 && return 0
        sleep 0.1
    done
    die "timed out after ${t}s waiting for $what"
}

listening() { # ns port
    [[ -n $(ip netns exec "$1" ss -ltnH "sport = :$2" 2>/dev/null) ]]
}

start_bg() { # logfile netns|- cmd... ; sets LAST_PID
    # An external command run with "&" is exec'd in the forked child, and "ip netns
    # exec" execs its command too: $! is the PID of the real process.
    local logf=$1 ns=$2
    shift 2
    if [[ $ns == - ]]; then
        "$@" >"$logf" 2>&1 &
    else
        ip netns exec "$ns" "$@" >"$logf" 2>&1 &
    fi
    LAST_PID=$!
    PIDS+=("$LAST_PID")
}
