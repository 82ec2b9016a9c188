#!/usr/bin/env bash
# The local stack for tests and the demo: Apache Kafka (KRaft, official jars from Maven
# Central), PostgreSQL 15, an S3-compatible server, a schema registry (Apicurio Registry,
# Confluent-compatible API, stored in PostgreSQL), Prometheus (scraping every guardian
# process that runs with the stack's env, with the SLO alerting rules), Alertmanager and
# a trace collector (Jaeger v2), all on 127.0.0.1.
#
#   stack.sh install        install what is missing (idempotent; caches outside the repo)
#   stack.sh up [--dr] [--secure]
#                           install, then start everything (--dr: a second Kafka cluster
#                           and MirrorMaker 2 replicating the first into it; --secure: a
#                           third cluster with SASL/SCRAM, TLS and ACLs for the tenant
#                           isolation tests)
#   stack.sh down           stop everything this stack started
#   stack.sh status         what runs, where, and where the logs are
#   stack.sh env            print the environment the services and tests read
#   stack.sh reset          down, then delete all stack data
#   stack.sh kill NAME      chaos faults: SIGKILL kafka-a|kafka-b|kafka-s|s3, crash postgres
#                           (immediate stop); `up` brings them back
#   stack.sh mirror DIR [REGEX]
#                           MirrorMaker 2 mirrors a-to-b (normal) or b-to-a (to fail
#                           back), the guardian topics or those matching REGEX
#   stack.sh demo [ARGS]    up, then `guardian demo` (release build)
#   stack.sh bench-tools    install the benchmark peers that tests do not need
#                           (dp_accounting 0.6.0 for `guardian-bench privacy`,
#                           flwr 1.42.0 for `guardian-bench secagg`, the Kafka
#                           Streams peer in tests/peers/kpi-streams for `guardian-bench kpi`)
#
# Data, logs and the env file live under $GUARDIAN_STACK_DIR (default: <repo>/.stack).
# Downloaded and built tools live under $GUARDIAN_TOOLS (default:
# ~/.cache/phoenix-guardian/tools) so a fresh clone reuses them.
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
STACK_DIR=${GUARDIAN_STACK_DIR:-$REPO/.stack}
TOOLS=${GUARDIAN_TOOLS:-$HOME/.cache/phoenix-guardian/tools}
KAFKA_VERSION=$(sed -n 's:.*<kafka.version>\(.*\)</kafka.version>.*:\1:p' "$REPO/tests/stack/kafka/pom.xml")
# Keyed by the pom's content: a changed pom resolves into a fresh folder.
KAFKA_LIBS=$TOOLS/kafka-$KAFKA_VERSION-$(sha1sum "$REPO/tests/stack/kafka/pom.xml" | cut -c1-10)/libs
S3S_VERSION=0.14.1
S3S_BIN=$TOOLS/s3s-fs-$S3S_VERSION/bin/s3s-fs
VENV=$TOOLS/venv
DP_VENV=$TOOLS/dpvenv
FLWR_VENV=$TOOLS/flwrvenv-1.42.0
# The Kafka Streams peer of the KPI rollup, built from tests/peers/kpi-streams into a
# folder keyed by its sources (a changed peer builds afresh).
KSTREAMS_SRC=$REPO/tests/peers/kpi-streams
KSTREAMS_BUILD=$TOOLS/kpi-streams-$(cd "$KSTREAMS_SRC" && find pom.xml src -type f | sort | xargs cat | sha1sum | cut -c1-10)
VALIDATORS_VENV=$TOOLS/validators
HELM_VERSION=3.22.0
ACTIONLINT_VERSION=1.7.12
JAEGER_VERSION=1.75.0
JAEGER_BIN=$TOOLS/jaeger-$JAEGER_VERSION/bin/jaeger
REGISTRY_VERSION=3.3.3
REGISTRY_HOME=$TOOLS/apicurio-registry-$REGISTRY_VERSION
REGISTRY_DB=guardian_registry
KAFKA_HEAP=${GUARDIAN_KAFKA_HEAP:-512m}
READY_SECONDS=${GUARDIAN_READY_SECONDS:-90}
S3_ACCESS_KEY=guardian
S3_SECRET_KEY=guardian-local-secret
PG_USER=guardian
PG_PASSWORD=guardian-local
PG_DB=guardian

say() { printf 'stack: %s\n' "$*" >&2; }
die() { printf 'stack: error: %s\n' "$*" >&2; exit 1; }

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

apt_install() {
  command -v apt-get >/dev/null || die "apt-get not found: install $* by hand"
  if [ ! -f "$STACK_DIR/.apt-updated" ]; then
    as_root apt-get update -qq >/dev/null && mkdir -p "$STACK_DIR" && touch "$STACK_DIR/.apt-updated"
  fi
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

pg_bin() { ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1; }

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# Ports are chosen once (free at that time) and kept: Kafka and PostgreSQL data refer to them.
port_for() {
  local name=$1 file=$STACK_DIR/ports
  mkdir -p "$STACK_DIR"; touch "$file"
  local port; port=$(sed -n "s/^$name=//p" "$file")
  if [ -z "$port" ]; then
    port=$(free_port)
    echo "$name=$port" >>"$file"
  fi
  echo "$port"
}

pid_alive() { [ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }

wait_until() { # wait_until SECONDS DESCRIPTION LOGFILE PIDFILE COMMAND...
  local seconds=$1 what=$2 log=$3 pidfile=$4; shift 4
  local deadline=$((SECONDS + seconds))
  until "$@"; do
    if [ -n "$pidfile" ] && ! pid_alive "$pidfile"; then
      tail -n 30 "$log" >&2 || true
      die "$what exited during start-up; full log: $log"
    fi
    if [ $SECONDS -ge $deadline ]; then
      tail -n 30 "$log" >&2 || true
      die "$what not ready after ${seconds}s; full log: $log"
    fi
    sleep 0.5
  done
}

# ---------------------------------------------------------------- install

install_java_tools() {
  command -v java >/dev/null || apt_install openjdk-17-jre-headless
  command -v mvn >/dev/null || apt_install maven
  if [ ! -f "$KAFKA_LIBS/.complete" ]; then
    say "resolving Apache Kafka $KAFKA_VERSION jars from Maven Central into $KAFKA_LIBS"
    rm -rf "$KAFKA_LIBS"; mkdir -p "$KAFKA_LIBS"
    (cd "$REPO/tests/stack/kafka" && mvn -q -B dependency:copy-dependencies \
        -DincludeScope=runtime -DoutputDirectory="$KAFKA_LIBS") || die "maven could not resolve the Kafka jars"
    touch "$KAFKA_LIBS/.complete"
  fi
}

# Apicurio Registry: the runnable Quarkus layout from Maven Central; it needs Java 21 or
# newer (Debian's packages stop at 17: a newer JDK installed beside it is looked for).
install_registry() {
  if [ ! -f "$REGISTRY_HOME/.complete" ]; then
    say "resolving Apicurio Registry $REGISTRY_VERSION from Maven Central into $REGISTRY_HOME (about 160 MB)"
    local tmp; tmp=$(mktemp -d)
    mvn -q -B dependency:copy -Dartifact="io.apicurio:apicurio-registry-app:$REGISTRY_VERSION:tar.gz:all" \
      -DoutputDirectory="$tmp" >"$TOOLS/apicurio-install.log" 2>&1 \
      || { tail -n 20 "$TOOLS/apicurio-install.log" >&2; rm -rf "$tmp"; die "maven could not resolve Apicurio Registry $REGISTRY_VERSION"; }
    rm -rf "$REGISTRY_HOME"; mkdir -p "$REGISTRY_HOME"
    tar -xzf "$tmp"/apicurio-registry-app-*.tar.gz -C "$REGISTRY_HOME" || die "could not unpack Apicurio Registry"
    rm -rf "$tmp"
    [ -f "$REGISTRY_HOME/quarkus-run.jar" ] || die "no quarkus-run.jar in $REGISTRY_HOME"
    touch "$REGISTRY_HOME/.complete"
  fi
  registry_java >/dev/null
}

# A java of version 21 or newer: $GUARDIAN_REGISTRY_JAVA, the one on PATH, or a JDK under
# /usr/lib/jvm (newest first).
registry_java() {
  local j v
  for j in ${GUARDIAN_REGISTRY_JAVA:-} "$(command -v java || true)" $(ls -d /usr/lib/jvm/*/bin/java 2>/dev/null | sort -rV); do
    [ -x "$j" ] || continue
    v=$("$j" -XshowSettings:properties -version 2>&1 | sed -n 's/^ *java.specification.version = \([0-9]*\).*/\1/p')
    if [ -n "$v" ] && [ "$v" -ge 21 ]; then echo "$j"; return 0; fi
  done
  die "Apicurio Registry needs Java 21 or newer and none was found (java on PATH, /usr/lib/jvm/*); install one or set GUARDIAN_REGISTRY_JAVA"
}

install_postgres() {
  [ -n "$(pg_bin)" ] || { say "installing PostgreSQL (Debian package)"; apt_install postgresql; }
  [ -n "$(pg_bin)" ] || die "PostgreSQL server binaries not found under /usr/lib/postgresql"
}

install_s3() {
  if [ ! -x "$S3S_BIN" ]; then
    say "building s3s-fs $S3S_VERSION (S3-compatible server; about 11 minutes on 2 cores, cached in $TOOLS)"
    cargo install "s3s-fs@$S3S_VERSION" --features binary --locked --root "$TOOLS/s3s-fs-$S3S_VERSION" \
      >"$TOOLS/s3s-fs-install.log" 2>&1 || { tail -n 20 "$TOOLS/s3s-fs-install.log" >&2; die "s3s-fs build failed; log: $TOOLS/s3s-fs-install.log"; }
  fi
}

# make_venv DIR WHAT PACKAGE==VERSION...: a Python venv with pinned packages, made once
# (a .complete marker records that the install finished).
make_venv() {
  local dir=$1 what=$2; shift 2
  # .complete holds the requirements installed: a changed list installs again.
  [ -f "$dir/.complete" ] && [ "$(cat "$dir/.complete")" = "$*" ] && return 0
  say "creating the venv in $dir ($what)"
  python3 -m venv "$dir" || { apt_install python3-venv; python3 -m venv "$dir"; }
  "$dir/bin/pip" install -q --disable-pip-version-check "$@" || die "pip could not install $*"
  echo "$*" >"$dir/.complete"
}

install_python() {
  # Downstream readers that are not ours (tests) and the peer baselines (benchmarks).
  make_venv "$VENV" "fastavro, confluent-kafka with its schema registry client" fastavro==1.13.1 \
    "confluent-kafka[schemaregistry,avro]==2.16.1"
}

install_bench_tools() {
  make_venv "$DP_VENV" "dp_accounting: benchmark peer and reference values" dp-accounting==0.6.0
  say "dp_accounting: GUARDIAN_DP_PYTHON=$DP_VENV/bin/python"
  make_venv "$FLWR_VENV" "Flower: secure aggregation benchmark peer" flwr==1.42.0
  say "flwr: GUARDIAN_FLWR_PYTHON=$FLWR_VENV/bin/python"
  install_java_tools
  if [ ! -f "$KSTREAMS_BUILD/.complete" ]; then
    say "building the Kafka Streams peer (Kafka Streams 4.4.0 from Maven Central) into $KSTREAMS_BUILD"
    rm -rf "$KSTREAMS_BUILD"
    (cd "$KSTREAMS_SRC" && mvn -q -B compile dependency:copy-dependencies -Dpeer.build="$KSTREAMS_BUILD") \
      || die "maven could not build the Kafka Streams peer"
    touch "$KSTREAMS_BUILD/.complete"
  fi
  say "Kafka Streams peer: GUARDIAN_KAFKA_STREAMS_CLASSPATH=$KSTREAMS_BUILD/classes:$KSTREAMS_BUILD/dependency/*"
}

install_cli_tools() {
  command -v kcat >/dev/null || { say "installing kcat (benchmark peer)"; apt_install kcat; }
  command -v curl >/dev/null || apt_install curl
  command -v prometheus >/dev/null && command -v promtool >/dev/null \
    || { say "installing Prometheus and promtool (Debian package)"; apt_install --no-install-recommends prometheus; }
  command -v prometheus-alertmanager >/dev/null \
    || { say "installing Alertmanager (Debian package)"; apt_install --no-install-recommends prometheus-alertmanager; }
  command -v chromium >/dev/null || { say "installing chromium (dashboard browser test)"; apt_install --no-install-recommends chromium; }
}

install_jaeger() {
  # Jaeger v2 (an OpenTelemetry collector with Jaeger's storage and query API): the trace
  # collector of the tests. Built from the Go module proxy as a tool of a scratch module
  # (its own go.mod has replace directives, so `go install pkg@version` refuses it).
  [ -x "$JAEGER_BIN" ] && return 0
  command -v go >/dev/null || apt_install golang-go
  local mod=$TOOLS/jaeger-$JAEGER_VERSION/mod
  say "building Jaeger $JAEGER_VERSION from the Go module proxy into $TOOLS/jaeger-$JAEGER_VERSION (about 5 minutes on 2 cores)"
  rm -rf "$mod"; mkdir -p "$mod"
  (cd "$mod" && go mod init guardian-stack/jaeger && go get -tool "github.com/jaegertracing/jaeger/cmd/jaeger@v$JAEGER_VERSION" \
    && go build -o "$JAEGER_BIN" github.com/jaegertracing/jaeger/cmd/jaeger) >"$TOOLS/jaeger-install.log" 2>&1 \
    || { tail -n 20 "$TOOLS/jaeger-install.log" >&2; die "Jaeger build failed; log: $TOOLS/jaeger-install.log"; }
}

install_deploy_tools() {
  # Offline validators of helm/, terraform/ and the Dockerfile (tests/deploy/check.sh).
  local helm_dir=$TOOLS/helm-$HELM_VERSION
  if [ ! -x "$helm_dir/bin/helm" ]; then
    command -v go >/dev/null || apt_install golang-go
    say "building helm $HELM_VERSION from the Go module proxy into $helm_dir (a few minutes on 2 cores)"
    GOBIN="$helm_dir/bin" go install "helm.sh/helm/v3/cmd/helm@v$HELM_VERSION" \
      >"$TOOLS/helm-install.log" 2>&1 || { tail -n 20 "$TOOLS/helm-install.log" >&2; die "helm build failed; log: $TOOLS/helm-install.log"; }
  fi
  make_venv "$VALIDATORS_VENV" "checkov, kubernetes-validate" checkov==3.3.30 kubernetes-validate==1.37.0
  if [ ! -x "$TOOLS/actionlint-$ACTIONLINT_VERSION/bin/actionlint" ]; then
    command -v go >/dev/null || apt_install golang-go
    say "building actionlint $ACTIONLINT_VERSION from the Go module proxy"
    GOBIN="$TOOLS/actionlint-$ACTIONLINT_VERSION/bin" go install "github.com/rhysd/actionlint/cmd/actionlint@v$ACTIONLINT_VERSION" \
      >"$TOOLS/actionlint-install.log" 2>&1 || { tail -n 20 "$TOOLS/actionlint-install.log" >&2; die "actionlint build failed"; }
  fi
  command -v terraform >/dev/null || say "warning: terraform is not on PATH (it comes with the machine image; no reachable registry serves it): tests/deploy/check.sh will fail"
}

cmd_install() {
  mkdir -p "$TOOLS" "$STACK_DIR"
  command -v python3 >/dev/null || apt_install python3
  install_java_tools
  install_registry
  install_postgres
  install_python
  install_cli_tools
  install_s3
  install_jaeger
  install_deploy_tools
  say "installed: kafka $KAFKA_VERSION, $("$(pg_bin)/postgres" --version), s3s-fs $S3S_VERSION, kcat, prometheus, alertmanager, jaeger $JAEGER_VERSION, apicurio registry $REGISTRY_VERSION, chromium, python venv, helm $HELM_VERSION, actionlint $ACTIONLINT_VERSION, checkov, kubernetes-validate"
}

# ---------------------------------------------------------------- kafka

kafka_dir() { echo "$STACK_DIR/kafka-$1"; }

KAFKA_TLS_PASSWORD=guardian-local-tls

# The secure broker's certificate for 127.0.0.1, signed by a local CA (keytool, from the
# JDK) whose PEM clients trust (GUARDIAN_KAFKA_SECURE_CA).
kafka_tls_material() {
  local tls=$1/tls
  # ca.p12 marks the CA-and-leaf layout; material from before it (a self-signed broker
  # certificate, which strict verifiers such as rustls refuse) is made again.
  [ -f "$tls/ca.p12" ] && [ -f "$tls/ca.pem" ] && return 0
  rm -rf "$tls" && mkdir -p "$tls"
  local pass=$KAFKA_TLS_PASSWORD log=$tls/keytool.log
  kt() { keytool "$@" >>"$log" 2>&1 || { cat "$log" >&2; die "keytool $1 failed creating the broker's TLS material"; }; }
  local ec=(-keyalg EC -groupname secp256r1 -sigalg SHA256withECDSA -validity 3650 -storetype PKCS12)
  # A local CA (what clients trust), and the broker's own key signed by it.
  kt -genkeypair -alias ca "${ec[@]}" -dname "CN=guardian-local-ca" -ext "BC:c=ca:true" \
    -ext "KU:c=keyCertSign,cRLSign" -keystore "$tls/ca.p12" -storepass "$pass" -keypass "$pass"
  kt -exportcert -rfc -alias ca -keystore "$tls/ca.p12" -storepass "$pass" -file "$tls/ca.pem"
  kt -genkeypair -alias broker "${ec[@]}" -dname "CN=guardian-local-broker" \
    -keystore "$tls/broker.p12" -storepass "$pass" -keypass "$pass"
  kt -certreq -alias broker -keystore "$tls/broker.p12" -storepass "$pass" -file "$tls/broker.csr"
  kt -gencert -rfc -alias ca -keystore "$tls/ca.p12" -storepass "$pass" -infile "$tls/broker.csr" \
    -outfile "$tls/broker.pem" -validity 3650 -sigalg SHA256withECDSA \
    -ext "SAN=ip:127.0.0.1,dns:localhost" -ext "EKU=serverAuth" -ext "KU:c=digitalSignature"
  kt -importcert -noprompt -alias ca -keystore "$tls/broker.p12" -storepass "$pass" -file "$tls/ca.pem"
  kt -importcert -alias broker -keystore "$tls/broker.p12" -storepass "$pass" -file "$tls/broker.pem"
}

kafka_start() {
  local cluster=$1 dir; dir=$(kafka_dir "$cluster")
  local bport cport
  bport=$(port_for "kafka_${cluster}_broker"); cport=$(port_for "kafka_${cluster}_controller")
  if pid_alive "$dir/pid"; then
    port_open "$bport" || die "kafka-$cluster runs (pid $(cat "$dir/pid")) but does not listen on $bport; log: $dir/server.log"
    return 0
  fi
  for p in "$bport" "$cport"; do
    port_open "$p" && die "port $p (kafka-$cluster) is taken by another program; run '$0 reset' to choose new ports"
  done
  mkdir -p "$dir/data"
  local listeners="PLAINTEXT://127.0.0.1:$bport,CONTROLLER://127.0.0.1:$cport"
  local advertised="PLAINTEXT://127.0.0.1:$bport"
  local protocols="PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT"
  if [ "$cluster" = a ]; then
    # A listener that advertises another port: `guardian chaos run` puts a TCP proxy there
    # (delay, jitter, partitions between the services and the broker).
    local xport pport; xport=$(port_for kafka_a_chaos); pport=$(port_for kafka_a_chaos_proxy)
    listeners="$listeners,CHAOS://127.0.0.1:$xport"
    advertised="$advertised,CHAOS://127.0.0.1:$pport"
    protocols="$protocols,CHAOS:PLAINTEXT"
  fi
  if [ "$cluster" = s ]; then
    # The secure cluster: SASL/SCRAM in clear and over TLS for the principals, under the
    # standard authorizer; the loopback PLAINTEXT listener is the operators' (super user).
    local sport tport; sport=$(port_for kafka_s_sasl); tport=$(port_for kafka_s_sasl_ssl)
    kafka_tls_material "$dir"
    listeners="$listeners,SASL://127.0.0.1:$sport,SASLTLS://127.0.0.1:$tport"
    advertised="$advertised,SASL://127.0.0.1:$sport,SASLTLS://127.0.0.1:$tport"
    protocols="$protocols,SASL:SASL_PLAINTEXT,SASLTLS:SASL_SSL"
  fi
  cat >"$dir/server.properties" <<EOF
# Single combined KRaft node for tests and the demo (generated by tests/stack/stack.sh).
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:$cport
listeners=$listeners
advertised.listeners=$advertised
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=$protocols
log.dirs=$dir/data
# Topics are declared in topics/ and created by 'guardian topics apply', never implicitly.
auto.create.topics.enable=false
num.partitions=1
# One broker: internal topics cannot have more than one replica.
offsets.topic.replication.factor=1
offsets.topic.num.partitions=10
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
transaction.state.log.num.partitions=10
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
# Tests start consumers constantly: do not wait for more members before the first assignment.
group.initial.rebalance.delay.ms=0
# The 128 MiB default is allocated on the heap.
log.cleaner.dedupe.buffer.size=16777216
EOF
  if [ "$cluster" = s ]; then
    cat >>"$dir/server.properties" <<EOF
# Tenant isolation: every principal needs an ACL; nothing is allowed by default.
authorizer.class.name=org.apache.kafka.metadata.authorizer.StandardAuthorizer
allow.everyone.if.no.acl.found=false
super.users=User:ANONYMOUS
sasl.enabled.mechanisms=SCRAM-SHA-512
listener.name.sasl.scram-sha-512.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required;
listener.name.sasltls.scram-sha-512.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required;
listener.name.sasltls.ssl.keystore.type=PKCS12
listener.name.sasltls.ssl.keystore.location=$dir/tls/broker.p12
listener.name.sasltls.ssl.keystore.password=$KAFKA_TLS_PASSWORD
listener.name.sasltls.ssl.key.password=$KAFKA_TLS_PASSWORD
EOF
  fi
  cat >"$dir/log4j2.properties" <<EOF
status = warn
appender.file.type = File
appender.file.name = file
appender.file.fileName = $dir/server.log
appender.file.layout.type = PatternLayout
appender.file.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = info
rootLogger.appenderRef.file.ref = file
logger.kafka.name = org.apache.kafka
logger.kafka.level = info
EOF
  if [ ! -f "$dir/data/meta.properties" ]; then
    java -cp "$KAFKA_LIBS/*" -Dlog4j2.configurationFile="$dir/log4j2.properties" kafka.tools.StorageTool \
      format -t "$(java -cp "$KAFKA_LIBS/*" kafka.tools.StorageTool random-uuid 2>/dev/null | tail -n 1)" \
      -c "$dir/server.properties" >"$dir/format.log" 2>&1 || { cat "$dir/format.log" >&2; die "kafka-$cluster storage format failed"; }
  fi
  say "starting kafka-$cluster on 127.0.0.1:$bport (log: $dir/server.log)"
  nohup java -Xms128m -Xmx"$KAFKA_HEAP" -XX:+UseG1GC -Djava.awt.headless=true \
    -Dlog4j2.configurationFile="$dir/log4j2.properties" \
    -cp "$KAFKA_LIBS/*" kafka.Kafka "$dir/server.properties" >"$dir/stdout.log" 2>&1 &
  echo $! >"$dir/pid"
  kafka_ready() { port_open "$bport" && grep -q "Kafka Server started" "$dir/server.log" 2>/dev/null; }
  wait_until "$READY_SECONDS" "kafka-$cluster" "$dir/server.log" "$dir/pid" kafka_ready
}

# ---------------------------------------------------------------- mirrormaker 2

mm2_dir() { echo "$STACK_DIR/mm2"; }

# The direction MirrorMaker 2 mirrors in: a-to-b (normal), b-to-a (before a failback).
mm2_direction() { cat "$(mm2_dir)/direction" 2>/dev/null || echo a-to-b; }

# MirrorMaker 2 (dedicated mode, official jars) replicating every topic of one region to
# the other under the same names, with consumer-group checkpoints and offset sync: kafka-a
# to kafka-b, or back after a failover (`stack.sh mirror b-to-a`). One direction at a
# time: with the same names in both regions, two directions would mirror in a loop.
mm2_start() {
  local dir; dir=$(mm2_dir)
  if pid_alive "$dir/pid"; then return 0; fi
  mkdir -p "$dir"
  local from=A to=B
  if [ "$(mm2_direction)" = b-to-a ]; then from=B to=A; fi
  local topics='(guardian|privacy|fl|kpi|slo|ops)\\..*, dr-.*'
  if [ -s "$dir/topics" ]; then topics=$(cat "$dir/topics"); fi
  cat >"$dir/mm2.properties" <<EOF
# Generated by tests/stack/stack.sh: region $from mirrored to region $to.
clusters = A, B
A.bootstrap.servers = 127.0.0.1:$(port_for kafka_a_broker)
B.bootstrap.servers = 127.0.0.1:$(port_for kafka_b_broker)
$from->$to.enabled = true
$to->$from.enabled = false
# The guardian topics (and the DR test's, prefixed dr-); test topics are not mirrored.
# (Backslashes are doubled: a properties file reads one as an escape.)
$from->$to.topics = $topics
$from->$to.topics.exclude = .*[-.]internal, .*\\\\.replica, __.*, mm2-.*, connect-.*
$from->$to.groups = .*
# Same topic names in both regions: services fail over without renaming anything.
replication.policy.class = org.apache.kafka.connect.mirror.IdentityReplicationPolicy
replication.factor = 1
checkpoints.topic.replication.factor = 1
heartbeats.topic.replication.factor = 1
offset-syncs.topic.replication.factor = 1
offset.storage.replication.factor = 1
status.storage.replication.factor = 1
config.storage.replication.factor = 1
# A translation point for every record (the default only every 100 records of lag).
offset.lag.max = 0
emit.checkpoints.interval.seconds = 1
emit.heartbeats.interval.seconds = 1
sync.group.offsets.enabled = true
sync.group.offsets.interval.seconds = 1
refresh.topics.interval.seconds = 2
refresh.groups.interval.seconds = 2
sync.topic.configs.enabled = true
sync.topic.acls.enabled = false
# Source offsets and offset syncs flushed every second (failback waits on them); the
# worker of a flow takes its settings from its target cluster's prefix.
offset.flush.interval.ms = 1000
A.offset.flush.interval.ms = 1000
B.offset.flush.interval.ms = 1000
# Committed records only: an aborted transaction (a crashed outbox publisher) must not
# reach the other region as if it had been committed.
A.consumer.isolation.level = read_committed
B.consumer.isolation.level = read_committed
EOF
  cat >"$dir/log4j2.properties" <<EOF
status = warn
appender.file.type = File
appender.file.name = file
appender.file.fileName = $dir/mm2.log
appender.file.layout.type = PatternLayout
appender.file.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = info
rootLogger.appenderRef.file.ref = file
EOF
  say "starting MirrorMaker 2, region $from → region $to (log: $dir/mm2.log)"
  nohup java -Xms64m -Xmx384m -XX:+UseG1GC -Djava.awt.headless=true \
    -Dlog4j2.configurationFile="$dir/log4j2.properties" \
    -cp "$KAFKA_LIBS/*" org.apache.kafka.connect.mirror.MirrorMaker "$dir/mm2.properties" --clusters $to \
    >"$dir/stdout.log" 2>&1 &
  echo $! >"$dir/pid"
  mm2_ready() { grep -q "Kafka MirrorMaker started" "$dir/mm2.log" 2>/dev/null; }
  wait_until "$READY_SECONDS" "mirrormaker2" "$dir/mm2.log" "$dir/pid" mm2_ready
}

# ---------------------------------------------------------------- postgres

pg_run() { # runs a PostgreSQL binary as the postgres user when we are root (initdb refuses root)
  if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

pg_start() {
  local dir=$STACK_DIR/pg bin port; bin=$(pg_bin); port=$(port_for postgres)
  mkdir -p "$dir/run"
  [ "$(id -u)" = 0 ] && chown postgres:postgres "$dir" "$dir/run"
  if [ ! -f "$dir/data/PG_VERSION" ]; then
    local pwfile; pwfile=$(mktemp); echo "postgres-local" >"$pwfile"; chmod 644 "$pwfile"
    pg_run "$bin/initdb" -D "$dir/data" -U postgres --auth-local=trust --auth-host=scram-sha-256 \
      --pwfile="$pwfile" -E UTF8 >"$dir/initdb.log" 2>&1 || { rm -f "$pwfile"; cat "$dir/initdb.log" >&2; die "initdb failed"; }
    rm -f "$pwfile"
  fi
  if ! pg_run "$bin/pg_ctl" -D "$dir/data" status >/dev/null 2>&1; then
    port_open "$port" && die "port $port (postgres) is taken by another program; run '$0 reset' to choose new ports"
    say "starting postgres on 127.0.0.1:$port (log: $dir/postgres.log)"
    pg_run "$bin/pg_ctl" -D "$dir/data" -l "$dir/postgres.log" -w -t "$READY_SECONDS" \
      -o "-p $port -k $dir/run -c listen_addresses=127.0.0.1 -c max_connections=200" start >/dev/null \
      || { tail -n 30 "$dir/postgres.log" >&2; die "postgres did not start; log: $dir/postgres.log"; }
  fi
  local psql=("$bin/psql" -X -q -v ON_ERROR_STOP=1 -h "$dir/run" -p "$port" -U postgres -d postgres)
  if [ "$(pg_run "${psql[@]}" -tAc "SELECT 1 FROM pg_roles WHERE rolname='$PG_USER'")" != 1 ]; then
    pg_run "${psql[@]}" -c "CREATE ROLE $PG_USER LOGIN CREATEROLE PASSWORD '$PG_PASSWORD'"
  fi
  local db
  for db in "$PG_DB" "$REGISTRY_DB"; do
    if [ "$(pg_run "${psql[@]}" -tAc "SELECT 1 FROM pg_database WHERE datname='$db'")" != 1 ]; then
      pg_run "${psql[@]}" -c "CREATE DATABASE $db OWNER $PG_USER"
    fi
  done
}

pg_stop() {
  local dir=$STACK_DIR/pg bin; bin=$(pg_bin)
  [ -n "$bin" ] && [ -f "$dir/data/PG_VERSION" ] || return 0
  if pg_run "$bin/pg_ctl" -D "$dir/data" status >/dev/null 2>&1; then
    pg_run "$bin/pg_ctl" -D "$dir/data" -m fast -w stop >/dev/null && say "stopped postgres"
  fi
}

# ---------------------------------------------------------------- s3

s3_start() {
  local dir=$STACK_DIR/s3 port; port=$(port_for s3)
  mkdir -p "$dir/data"
  if pid_alive "$dir/pid"; then return 0; fi
  port_open "$port" && die "port $port (s3) is taken by another program; run '$0 reset' to choose new ports"
  say "starting s3s-fs on 127.0.0.1:$port (log: $dir/s3.log)"
  nohup "$S3S_BIN" --host 127.0.0.1 --port "$port" --access-key "$S3_ACCESS_KEY" \
    --secret-key "$S3_SECRET_KEY" "$dir/data" >"$dir/s3.log" 2>&1 &
  echo $! >"$dir/pid"
  s3_ready() { port_open "$port"; }
  wait_until "$READY_SECONDS" "s3s-fs" "$dir/s3.log" "$dir/pid" s3_ready
}

# ---------------------------------------------------------------- monitoring

# Prometheus scrapes every guardian process that announces itself in its discovery folder
# (GUARDIAN_PROMETHEUS_SD_DIR: each service writes <service>-<pid>.json there), evaluates
# the SLO alerting rules of the repository and sends what fires to Alertmanager.
prom_dir() { echo "$STACK_DIR/prometheus"; }
am_dir() { echo "$STACK_DIR/alertmanager"; }

http_ready() { curl -fs -o /dev/null --max-time 2 "$1"; }

alertmanager_start() {
  local dir; dir=$(am_dir)
  local port; port=$(port_for alertmanager)
  mkdir -p "$dir/data"
  if pid_alive "$dir/pid"; then return 0; fi
  port_open "$port" && die "port $port (alertmanager) is taken by another program; run '$0 reset' to choose new ports"
  # Every notification, firing and resolved, goes to one webhook on loopback
  # (GUARDIAN_ALERT_WEBHOOK): the alerting test listens there; when nothing does, the
  # alerts stay visible in the API and UI. Paging someone is a deployment's configuration.
  cat >"$dir/alertmanager.yml" <<YAML
route:
  receiver: webhook
  group_by: [alertname, slo, instance]
  group_wait: 5s
  group_interval: 10s
  repeat_interval: 4h
receivers:
  - name: webhook
    webhook_configs:
      - url: http://127.0.0.1:$(port_for alert_webhook)/alerts
        send_resolved: true
YAML
  say "starting Alertmanager on 127.0.0.1:$port (log: $dir/alertmanager.log)"
  # An empty cluster address: a single Alertmanager, no gossip port on every interface.
  nohup prometheus-alertmanager --config.file="$dir/alertmanager.yml" --storage.path="$dir/data" \
    --web.listen-address="127.0.0.1:$port" --cluster.listen-address= \
    >"$dir/alertmanager.log" 2>&1 &
  echo $! >"$dir/pid"
  am_ready() { http_ready "http://127.0.0.1:$port/-/ready"; }
  wait_until "$READY_SECONDS" "alertmanager" "$dir/alertmanager.log" "$dir/pid" am_ready
}

prometheus_start() {
  local dir; dir=$(prom_dir)
  local port; port=$(port_for prometheus)
  mkdir -p "$dir/data" "$dir/targets"
  if pid_alive "$dir/pid"; then return 0; fi
  port_open "$port" && die "port $port (prometheus) is taken by another program; run '$0 reset' to choose new ports"
  # Short intervals: a local stack where tests wait for alerts; the rules' own `for`
  # durations are kept as shipped.
  cat >"$dir/prometheus.yml" <<YAML
global:
  scrape_interval: 5s
  evaluation_interval: 5s
rule_files:
  - $REPO/services/slo/prometheus/rules.yaml
alerting:
  alertmanagers:
    - static_configs:
        - targets: ["127.0.0.1:$(port_for alertmanager)"]
scrape_configs:
  - job_name: guardian
    file_sd_configs:
      - files: ["$dir/targets/*.json"]
        refresh_interval: 5s
YAML
  promtool check config "$dir/prometheus.yml" >"$dir/check.log" 2>&1 \
    || { cat "$dir/check.log" >&2; die "the Prometheus configuration does not check"; }
  say "starting Prometheus on 127.0.0.1:$port (log: $dir/prometheus.log)"
  nohup prometheus --config.file="$dir/prometheus.yml" --storage.tsdb.path="$dir/data" \
    --storage.tsdb.retention.time=2d --web.listen-address="127.0.0.1:$port" --web.enable-lifecycle \
    >"$dir/prometheus.log" 2>&1 &
  echo $! >"$dir/pid"
  prom_ready() { http_ready "http://127.0.0.1:$port/-/ready"; }
  wait_until "$READY_SECONDS" "prometheus" "$dir/prometheus.log" "$dir/pid" prom_ready
}

# The schema registry: Apicurio Registry's Confluent-compatible API
# (GUARDIAN_SCHEMA_REGISTRY_URL, /apis/ccompat/v7), its artifacts in PostgreSQL (database
# guardian_registry, tables of its own), HTTP and management (health) on loopback.
registry_dir() { echo "$STACK_DIR/registry"; }

registry_start() {
  local dir; dir=$(registry_dir)
  local port mport; port=$(port_for registry); mport=$(port_for registry_management)
  mkdir -p "$dir"
  if pid_alive "$dir/pid"; then return 0; fi
  for p in "$port" "$mport"; do
    port_open "$p" && die "port $p (schema registry) is taken by another program; run '$0 reset' to choose new ports"
  done
  local java; java=$(registry_java)
  say "starting the schema registry (Apicurio $REGISTRY_VERSION) on 127.0.0.1:$port (log: $dir/registry.log)"
  # exec: the recorded pid is the JVM's own, so `down` stops it.
  local pgport; pgport=$(port_for postgres)
  (cd "$dir" && exec env APICURIO_STORAGE_KIND=sql APICURIO_STORAGE_SQL_KIND=postgresql \
    APICURIO_DATASOURCE_URL="jdbc:postgresql://127.0.0.1:$pgport/$REGISTRY_DB" \
    APICURIO_DATASOURCE_USERNAME="$PG_USER" APICURIO_DATASOURCE_PASSWORD="$PG_PASSWORD" \
    nohup "$java" -Xms64m -Xmx512m -Dquarkus.http.host=127.0.0.1 -Dquarkus.http.port="$port" \
      -Dquarkus.management.host=127.0.0.1 -Dquarkus.management.port="$mport" \
      -jar "$REGISTRY_HOME/quarkus-run.jar" >"$dir/registry.log" 2>&1) &
  echo $! >"$dir/pid"
  registry_ready() { http_ready "http://127.0.0.1:$mport/health/ready"; }
  # About 20 s on 2 cores (Quarkus start, then its tables in PostgreSQL).
  wait_until $((READY_SECONDS > 180 ? READY_SECONDS : 180)) "schema registry" "$dir/registry.log" "$dir/pid" registry_ready
}

# Jaeger v2 with in-memory storage: OTLP/HTTP in (GUARDIAN_OTLP_ENDPOINT; a process
# exports its spans when OTEL_EXPORTER_OTLP_ENDPOINT is set to it), the query API out
# (GUARDIAN_JAEGER_URL: /api/services, /api/traces/ID). Every port on loopback.
jaeger_start() {
  local dir=$STACK_DIR/jaeger
  mkdir -p "$dir"
  if pid_alive "$dir/pid"; then return 0; fi
  local otlp query grpc health
  otlp=$(port_for jaeger_otlp); query=$(port_for jaeger_query); grpc=$(port_for jaeger_grpc); health=$(port_for jaeger_health)
  for p in "$otlp" "$query" "$grpc" "$health"; do
    port_open "$p" && die "port $p (jaeger) is taken by another program; run '$0 reset' to choose new ports"
  done
  cat >"$dir/config.yaml" <<YAML
service:
  extensions: [jaeger_storage, jaeger_query, healthcheckv2]
  pipelines:
    traces:
      receivers: [otlp]
      processors: [batch]
      exporters: [jaeger_storage_exporter]
  telemetry:
    resource:
      service.name: jaeger
    metrics:
      level: none
    logs:
      level: warn
extensions:
  healthcheckv2:
    use_v2: true
    http:
      endpoint: 127.0.0.1:$health
  jaeger_query:
    storage:
      traces: memory
    http:
      endpoint: 127.0.0.1:$query
    grpc:
      endpoint: 127.0.0.1:$grpc
  jaeger_storage:
    backends:
      memory:
        memory:
          max_traces: 100000
receivers:
  otlp:
    protocols:
      http:
        endpoint: 127.0.0.1:$otlp
processors:
  batch:
    timeout: 1s
exporters:
  jaeger_storage_exporter:
    trace_storage: memory
YAML
  say "starting Jaeger on 127.0.0.1:$query, OTLP on 127.0.0.1:$otlp (log: $dir/jaeger.log)"
  nohup "$JAEGER_BIN" --config "$dir/config.yaml" >"$dir/jaeger.log" 2>&1 &
  echo $! >"$dir/pid"
  jaeger_ready() { http_ready "http://127.0.0.1:$health/status" && port_open "$otlp"; }
  wait_until "$READY_SECONDS" "jaeger" "$dir/jaeger.log" "$dir/pid" jaeger_ready
}

# ---------------------------------------------------------------- commands

write_env() {
  local f=$STACK_DIR/env
  {
    echo "# Generated by tests/stack/stack.sh: source it to reach the local stack."
    echo "export GUARDIAN_STACK_DIR='$STACK_DIR'"
    echo "export GUARDIAN_KAFKA_BOOTSTRAP='127.0.0.1:$(port_for kafka_a_broker)'"
    if [ -f "$(kafka_dir b)/server.properties" ]; then
      echo "export GUARDIAN_KAFKA_DR_BOOTSTRAP='127.0.0.1:$(port_for kafka_b_broker)'"
    fi
    if grep -q '^listeners=.*CHAOS://' "$(kafka_dir a)/server.properties" 2>/dev/null; then
      echo "export GUARDIAN_KAFKA_CHAOS_PROXY='127.0.0.1:$(port_for kafka_a_chaos_proxy)'"
      echo "export GUARDIAN_KAFKA_CHAOS_UPSTREAM='127.0.0.1:$(port_for kafka_a_chaos)'"
    fi
    if [ -f "$(kafka_dir s)/server.properties" ]; then
      echo "export GUARDIAN_KAFKA_SECURE_ADMIN='127.0.0.1:$(port_for kafka_s_broker)'"
      echo "export GUARDIAN_KAFKA_SECURE_SASL='127.0.0.1:$(port_for kafka_s_sasl)'"
      echo "export GUARDIAN_KAFKA_SECURE_SASL_SSL='127.0.0.1:$(port_for kafka_s_sasl_ssl)'"
      echo "export GUARDIAN_KAFKA_SECURE_CA='$(kafka_dir s)/tls/ca.pem'"
    fi
    echo "export GUARDIAN_DATABASE_URL='postgres://$PG_USER:$PG_PASSWORD@127.0.0.1:$(port_for postgres)/$PG_DB'"
    echo "export GUARDIAN_S3_ENDPOINT='http://127.0.0.1:$(port_for s3)'"
    echo "export GUARDIAN_S3_ACCESS_KEY='$S3_ACCESS_KEY'"
    echo "export GUARDIAN_S3_SECRET_KEY='$S3_SECRET_KEY'"
    echo "export GUARDIAN_SCHEMA_REGISTRY_URL='http://127.0.0.1:$(port_for registry)/apis/ccompat/v7'"
    echo "export GUARDIAN_PROMETHEUS_URL='http://127.0.0.1:$(port_for prometheus)'"
    echo "export GUARDIAN_ALERTMANAGER_URL='http://127.0.0.1:$(port_for alertmanager)'"
    echo "export GUARDIAN_PROMETHEUS_SD_DIR='$(prom_dir)/targets'"
    echo "export GUARDIAN_ALERT_WEBHOOK='127.0.0.1:$(port_for alert_webhook)'"
    echo "export GUARDIAN_OTLP_ENDPOINT='http://127.0.0.1:$(port_for jaeger_otlp)'"
    echo "export GUARDIAN_JAEGER_URL='http://127.0.0.1:$(port_for jaeger_query)'"
    echo "export GUARDIAN_KAFKA_LIBS='$KAFKA_LIBS'"
    echo "export GUARDIAN_PYTHON='$VENV/bin/python'"
    if [ -f "$DP_VENV/.complete" ]; then echo "export GUARDIAN_DP_PYTHON='$DP_VENV/bin/python'"; fi
    if [ -f "$FLWR_VENV/.complete" ]; then echo "export GUARDIAN_FLWR_PYTHON='$FLWR_VENV/bin/python'"; fi
    if [ -f "$KSTREAMS_BUILD/.complete" ]; then echo "export GUARDIAN_KAFKA_STREAMS_CLASSPATH='$KSTREAMS_BUILD/classes:$KSTREAMS_BUILD/dependency/*'"; fi
  } >"$f.tmp"
  mv "$f.tmp" "$f"
}

cmd_up() {
  local dr=false secure=false
  for a in "$@"; do
    case $a in --dr) dr=true ;; --secure) secure=true ;; *) die "unknown option for up: $a" ;; esac
  done
  cmd_install
  # Only Kafka runs as the postgres user's neighbour: keep the stack folder traversable.
  mkdir -p "$STACK_DIR"; chmod 755 "$STACK_DIR"
  pg_start
  s3_start
  registry_start
  kafka_start a
  if $dr; then kafka_start b; mm2_start; fi
  if $secure; then kafka_start s; fi
  alertmanager_start
  prometheus_start
  jaeger_start
  write_env
  say "up. Environment: $STACK_DIR/env (source it, or run '$0 env')"
}

stop_pidfile() {
  local name=$1 pidfile=$2
  pid_alive "$pidfile" || { rm -f "$pidfile"; return 0; }
  local pid; pid=$(cat "$pidfile")
  kill -TERM "$pid" 2>/dev/null || true
  local deadline=$((SECONDS + 30))
  while kill -0 "$pid" 2>/dev/null; do
    [ $SECONDS -ge $deadline ] && { kill -KILL "$pid" 2>/dev/null || true; break; }
    sleep 0.2
  done
  rm -f "$pidfile"
  say "stopped $name"
}

# Faults for chaos experiments: SIGKILL a Kafka node, crash PostgreSQL (immediate
# shutdown: no checkpoint, crash recovery on the next start) or SIGKILL the S3 server.
# `up` starts whatever is down again.
cmd_kill() {
  local what=${1:-}
  case $what in
    kafka-a|kafka-b|kafka-s)
      local pidfile; pidfile=$(kafka_dir "${what#kafka-}")/pid
      pid_alive "$pidfile" || die "$what is not running"
      kill -KILL "$(cat "$pidfile")"; rm -f "$pidfile" ;;
    postgres)
      pg_run "$(pg_bin)/pg_ctl" -D "$STACK_DIR/pg/data" -m immediate -w stop >/dev/null || die "postgres is not running" ;;
    s3)
      pid_alive "$STACK_DIR/s3/pid" || die "s3s-fs is not running"
      kill -KILL "$(cat "$STACK_DIR/s3/pid")"; rm -f "$STACK_DIR/s3/pid" ;;
    *) die "kill what? kafka-a, kafka-b, kafka-s, postgres or s3" ;;
  esac
  say "killed $what"
}

# Mirror the other way: stops MirrorMaker 2 and starts it in DIRECTION (kept across `up`),
# for the topics matching REGEX (a Java regex as MirrorMaker 2 reads it from its
# properties file; default: the guardian topics).
cmd_mirror() {
  local direction=${1:-} topics=${2:-}
  case $direction in a-to-b|b-to-a) ;; *) die "mirror which way? a-to-b or b-to-a [REGEX]" ;; esac
  [ -f "$(mm2_dir)/mm2.properties" ] || die "no MirrorMaker 2 here: start the stack with 'up --dr' first"
  stop_pidfile mirrormaker2 "$(mm2_dir)/pid"
  echo "$direction" >"$(mm2_dir)/direction"
  printf '%s' "${topics//\\/\\\\}" >"$(mm2_dir)/topics"
  mm2_start
}

cmd_down() {
  stop_pidfile jaeger "$STACK_DIR/jaeger/pid"
  stop_pidfile prometheus "$(prom_dir)/pid"
  stop_pidfile alertmanager "$(am_dir)/pid"
  stop_pidfile mirrormaker2 "$(mm2_dir)/pid"
  for c in s b a; do stop_pidfile "kafka-$c" "$(kafka_dir $c)/pid"; done
  stop_pidfile s3s-fs "$STACK_DIR/s3/pid"
  stop_pidfile "schema registry" "$(registry_dir)/pid"
  pg_stop
}

cmd_status() {
  local rc=0 line
  for c in a b s; do
    local d; d=$(kafka_dir $c)
    [ -f "$d/server.properties" ] || continue
    if pid_alive "$d/pid"; then line="up   pid $(cat "$d/pid") 127.0.0.1:$(port_for "kafka_${c}_broker")"; else line="down"; rc=1; fi
    printf '%-12s %s  log: %s\n' "kafka-$c" "$line" "$d/server.log"
  done
  if [ -f "$(mm2_dir)/mm2.properties" ]; then
    if pid_alive "$(mm2_dir)/pid"; then line="up   pid $(cat "$(mm2_dir)/pid") $(mm2_direction)"; else line="down"; rc=1; fi
    printf '%-12s %s  log: %s\n' mm2 "$line" "$(mm2_dir)/mm2.log"
  fi
  if [ -n "$(pg_bin)" ] && pg_run "$(pg_bin)/pg_ctl" -D "$STACK_DIR/pg/data" status >/dev/null 2>&1; then
    line="up   127.0.0.1:$(port_for postgres)"; else line="down"; rc=1; fi
  printf '%-12s %s  log: %s\n' postgres "$line" "$STACK_DIR/pg/postgres.log"
  if pid_alive "$STACK_DIR/s3/pid"; then line="up   pid $(cat "$STACK_DIR/s3/pid") 127.0.0.1:$(port_for s3)"; else line="down"; rc=1; fi
  printf '%-12s %s  log: %s\n' s3 "$line" "$STACK_DIR/s3/s3.log"
  if pid_alive "$(registry_dir)/pid"; then line="up   pid $(cat "$(registry_dir)/pid") http://127.0.0.1:$(port_for registry)/apis/ccompat/v7"; else line="down"; rc=1; fi
  printf '%-12s %s  log: %s\n' registry "$line" "$(registry_dir)/registry.log"
  if pid_alive "$(prom_dir)/pid"; then line="up   pid $(cat "$(prom_dir)/pid") http://127.0.0.1:$(port_for prometheus)"; else line="down"; rc=1; fi
  printf '%-12s %s  log: %s\n' prometheus "$line" "$(prom_dir)/prometheus.log"
  if pid_alive "$(am_dir)/pid"; then line="up   pid $(cat "$(am_dir)/pid") http://127.0.0.1:$(port_for alertmanager)"; else line="down"; rc=1; fi
  printf '%-12s %s  log: %s\n' alertmanager "$line" "$(am_dir)/alertmanager.log"
  if pid_alive "$STACK_DIR/jaeger/pid"; then line="up   pid $(cat "$STACK_DIR/jaeger/pid") http://127.0.0.1:$(port_for jaeger_query)"; else line="down"; rc=1; fi
  printf '%-12s %s  log: %s\n' jaeger "$line" "$STACK_DIR/jaeger/jaeger.log"
  return $rc
}

cmd_env() { [ -f "$STACK_DIR/env" ] || die "no env file: run '$0 up' first"; cat "$STACK_DIR/env"; }

cmd_reset() { cmd_down; rm -rf "$STACK_DIR"; say "deleted $STACK_DIR"; }

cmd_demo() {
  cmd_up
  # shellcheck disable=SC1091
  . "$STACK_DIR/env"
  say "building guardian (release)"
  (cd "$REPO" && cargo build --release -q -p guardian)
  local target; target=$(cd "$REPO" && cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')
  say "Prometheus:   $GUARDIAN_PROMETHEUS_URL/alerts (the demo's /metrics is scraped as job guardian)"
  say "Alertmanager: $GUARDIAN_ALERTMANAGER_URL"
  say "Traces:       $GUARDIAN_JAEGER_URL/api/traces?service=guardian-demo (Jaeger query API)"
  export OTEL_EXPORTER_OTLP_ENDPOINT=$GUARDIAN_OTLP_ENDPOINT
  # The demo prints its own status every 5 s; the logs show warnings only.
  export RUST_LOG=${RUST_LOG:-warn}
  # Records in Confluent framing with the stack's registry: what downstream readers take.
  exec "$target/release/guardian" demo --topics-dir "$REPO/topics" --wire-format confluent "$@"
}

case ${1:-} in
  install) cmd_install ;;
  kill) shift; cmd_kill "$@" ;;
  mirror) shift; cmd_mirror "$@" ;;
  up) shift; cmd_up "$@" ;;
  down) cmd_down ;;
  status) cmd_status ;;
  env) cmd_env ;;
  reset) cmd_reset ;;
  demo) shift; cmd_demo "$@" ;;
  bench-tools) mkdir -p "$TOOLS"; install_bench_tools; if [ -f "$STACK_DIR/env" ]; then write_env; fi ;;
  -h|--help|help|"") sed -n '2,/^set -euo/p' "$0" | grep '^#' | sed 's/^# \{0,1\}//' ;;
  *) die "unknown command '$1' (try: install, up, down, status, env, reset, kill, mirror, demo, bench-tools)" ;;
esac
