#!/usr/bin/env bash
# A real single-node Apache Kafka 3.9.1 (KRaft, broker+controller) without Docker.
#
#   deploy/kafka/kafka.sh start  DATA_DIR [PORT] [CONTROLLER_PORT]   format (once) and start; wait until clients connect
#   deploy/kafka/kafka.sh stop   DATA_DIR                             stop cleanly (SIGTERM, then SIGKILL after 30 s)
#   deploy/kafka/kafka.sh status DATA_DIR                             exit 0 when running and accepting clients
#   deploy/kafka/kafka.sh fetch                                       resolve the broker jars from Maven Central into lib/
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
lib="$here/lib"

log() { printf '[kafka] %s\n' "$*" >&2; }

fetch() {
  if compgen -G "$lib/kafka_2.13-3.9.1.jar" >/dev/null; then return 0; fi
  command -v mvn >/dev/null || { log "Maven (mvn) is needed to fetch the Kafka jars"; exit 1; }
  log "resolving org.apache.kafka:kafka_2.13:3.9.1 and its runtime closure from Maven Central"
  mvn -q -B -f "$here/pom.xml" dependency:copy-dependencies
}

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && exec 3>&- 3<&-; }

classpath() { local cp; cp=$(printf '%s:' "$lib"/*.jar); printf '%s' "${cp%:}"; }

start() {
  local data="$1" port="${2:-9092}" cport="${3:-9093}"
  fetch
  mkdir -p "$data/logs"
  data="$(cd "$data" && pwd)"
  if [ -f "$data/kafka.pid" ] && kill -0 "$(cat "$data/kafka.pid")" 2>/dev/null; then
    log "already running (pid $(cat "$data/kafka.pid"))"; return 0
  fi
  if port_open "$port"; then log "port $port is already in use"; exit 1; fi
  cat >"$data/server.properties" <<PROPS
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:$cport
listeners=PLAINTEXT://127.0.0.1:$port,CONTROLLER://127.0.0.1:$cport
advertised.listeners=PLAINTEXT://127.0.0.1:$port
controller.listener.names=CONTROLLER
listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT
inter.broker.listener.name=PLAINTEXT
log.dirs=$data/logs
num.partitions=1
offsets.topic.replication.factor=1
offsets.topic.num.partitions=4
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
group.initial.rebalance.delay.ms=0
auto.create.topics.enable=true
log.retention.hours=168
PROPS
  cat >"$data/log4j.properties" <<'L4J'
log4j.rootLogger=WARN, file
log4j.appender.file=org.apache.log4j.FileAppender
log4j.appender.file.File=${kafka.logs.dir}/server.log
log4j.appender.file.layout=org.apache.log4j.PatternLayout
log4j.appender.file.layout.ConversionPattern=[%d] %p %m (%c)%n
log4j.logger.kafka.server.KafkaServer=INFO
log4j.logger.kafka.server.BrokerServer=INFO
L4J
  local cp; cp="$(classpath)"
  local jopts=(-Xms256m -Xmx1g -XX:+UseG1GC -Djava.awt.headless=true
               "-Dlog4j.configuration=file:$data/log4j.properties" "-Dkafka.logs.dir=$data")
  if [ ! -f "$data/logs/meta.properties" ]; then
    local cluster_id
    cluster_id="$(java -cp "$cp" "${jopts[@]}" kafka.tools.StorageTool random-uuid)"
    java -cp "$cp" "${jopts[@]}" kafka.tools.StorageTool format -t "$cluster_id" \
      -c "$data/server.properties" >"$data/format.log" 2>&1 || { cat "$data/format.log" >&2; exit 1; }
  fi
  nohup java -cp "$cp" "${jopts[@]}" kafka.Kafka "$data/server.properties" \
    >"$data/stdout.log" 2>&1 </dev/null &
  echo $! >"$data/kafka.pid"
  echo "$port" >"$data/kafka.port"
  log "started pid $(cat "$data/kafka.pid") on 127.0.0.1:$port; waiting for it to accept clients"
  for _ in $(seq 1 240); do
    if ! kill -0 "$(cat "$data/kafka.pid")" 2>/dev/null; then
      log "broker exited during start-up; last lines of its log:"; tail -n 30 "$data/stdout.log" "$data/server.log" >&2 || true
      exit 1
    fi
    if port_open "$port" && grep -q "BrokerServer id=1] Transition from STARTING to STARTED" "$data/server.log" 2>/dev/null; then
      log "ready on 127.0.0.1:$port"; return 0
    fi
    sleep 0.5
  done
  log "broker did not become ready in 120 s"; exit 1
}

stop() {
  local data="$1"
  [ -f "$data/kafka.pid" ] || { log "not running"; return 0; }
  local pid; pid="$(cat "$data/kafka.pid")"
  if kill -0 "$pid" 2>/dev/null; then
    kill -TERM "$pid"
    for _ in $(seq 1 60); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
    if kill -0 "$pid" 2>/dev/null; then log "no clean stop in 30 s; killing"; kill -KILL "$pid" || true; fi
  fi
  rm -f "$data/kafka.pid"
  log "stopped"
}

status() {
  local data="$1"
  if [ -f "$data/kafka.pid" ] && kill -0 "$(cat "$data/kafka.pid")" 2>/dev/null \
     && port_open "$(cat "$data/kafka.port")"; then
    echo "kafka: running pid $(cat "$data/kafka.pid") on 127.0.0.1:$(cat "$data/kafka.port")"; return 0
  fi
  echo "kafka: stopped"; return 1
}

cmd="${1:-}"; shift || true
case "$cmd" in
  start) [ $# -ge 1 ] || { log "usage: $0 start DATA_DIR [PORT] [CONTROLLER_PORT]"; exit 2; }; start "$@" ;;
  stop) [ $# -ge 1 ] || { log "usage: $0 stop DATA_DIR"; exit 2; }; stop "$1" ;;
  status) [ $# -ge 1 ] || { log "usage: $0 status DATA_DIR"; exit 2; }; status "$1" ;;
  fetch) fetch ;;
  *) log "usage: $0 start|stop|status DATA_DIR … | fetch"; exit 2 ;;
esac
