# Shared by bench/kv_cpu and bench/tracing_cpu (sourced, not run): server CPU per request of
# GET /v1/kv/{key} over one wrk run, and the median of several.

TICKS=$(getconf CLK_TCK)
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
# µs of server CPU (user + system) per request over one wrk run of $DURATION s at
# $CONNECTIONS against `port` served by `pid`.
measure() {
  local pid=$1 port=$2 before after requests
  before=$(cpu_ticks "$pid")
  requests=$(wrk -t1 -c"$CONNECTIONS" -d"${DURATION}s" "http://127.0.0.1:$port/v1/kv/bench-key" \
    | awk '/requests in/ {print $1}')
  after=$(cpu_ticks "$pid")
  awk -v t=$((after - before)) -v hz="$TICKS" -v n="$requests" 'BEGIN {printf "%.2f", t / hz * 1e6 / n}'
}
median() { printf '%s\n' "$@" | sort -n | awk '{a[NR] = $1} END {print a[int((NR + 1) / 2)]}'; }
