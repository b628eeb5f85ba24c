#!/usr/bin/env bash
# Overhead benchmark (issue 6, first part): msgsend's own cost per message, measured side by
# side in one run against the same sandbox on 127.0.0.1 with its rate limits set far above what
# loopback carries:
#   1. the ceiling: examples/ceiling.rs, a bare reqwest loop POSTing N messages;
#   2. msgsend bulk over an N-recipient CSV, journal on, the same concurrency.
# Prints both rates and msgsend ÷ ceiling. Usage: N=100000 C=64 bash bench/overhead.sh
set -euo pipefail
cd "$(dirname "$0")/.."
N=${N:-100000}
C=${C:-64}

cargo build --release --bins --examples -q
dir=$(mktemp -d /tmp/msgsend-bench.XXXXXX)
trap 'kill "$sandbox" 2>/dev/null || true; rm -rf "$dir"' EXIT

python3 - "$dir/users.csv" "$N" <<'PY'
import datetime, sys
path, n = sys.argv[1], int(sys.argv[2])
born = (datetime.date.today() - datetime.timedelta(days=25 * 365)).isoformat()
with open(path, "w") as f:
    f.write("name,phone,birth_date\n")
    for i in range(n):
        f.write(f"사람{i},010-{1000 + i // 10000:04}-{i % 10000:04},{born}\n")
PY
read -r kakao_port sms_port < <(python3 -c '
import socket
s = [socket.socket() for _ in range(2)]
for x in s: x.bind(("127.0.0.1", 0))
print(*[x.getsockname()[1] for x in s])')

target/release/msgsend sandbox --kakaotalk-addr "127.0.0.1:$kakao_port" --sms-addr "127.0.0.1:$sms_port" \
    --kakaotalk-rate 100000000/s --sms-rate 100000000/s 2>"$dir/sandbox.log" &
sandbox=$!
sleep 1

read -r ceiling_ok ceiling_s ceiling_rate < <(target/release/examples/ceiling "http://127.0.0.1:$kakao_port" "$N" "$C")

cat >"$dir/msgsend.toml" <<TOML
state_dir = "$dir/state"
[providers.kakaotalk]
base_url = "http://127.0.0.1:$kakao_port"
username = "autoever"
password = "1234"
rate_limit = "100000000/s"
[providers.sms]
base_url = "http://127.0.0.1:$sms_port"
username = "autoever"
password = "5678"
rate_limit = "100000000/s"
[bulk]
concurrency = $C
[message]
header = "{name}님, 안녕하세요. 현대 오토에버입니다."
TOML
start=$(date +%s.%N)
${MSGSEND_BENCH_WRAP:-} target/release/msgsend --config "$dir/msgsend.toml" -q --no-progress bulk --age-group 20s \
    --csv "$dir/users.csv" --message "hi {name}" --summary-json "$dir/summary.json" >/dev/null
end=$(date +%s.%N)
sent=$(python3 -c "import json; print(json.load(open('$dir/summary.json'))['sent'])")
python3 - "$N" "$C" "$ceiling_ok" "$ceiling_s" "$sent" "$start" "$end" <<'PY'
import sys
n, c, c_ok, c_s, sent, start, end = sys.argv[1:]
m_s = float(end) - float(start)
c_rate = int(c_ok) / float(c_s)
m_rate = int(sent) / m_s
print(f"N={n} concurrency={c}")
print(f"ceiling (bare reqwest loop): {c_ok} in {float(c_s):.2f} s = {c_rate:,.0f} msgs/s")
print(f"msgsend bulk (journal on):   {sent} in {m_s:.2f} s = {m_rate:,.0f} msgs/s (whole run: startup, count pass, journal)")
print(f"overhead ratio msgsend/ceiling = {m_rate / c_rate:.2f}")
PY
