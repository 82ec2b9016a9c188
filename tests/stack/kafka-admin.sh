#!/usr/bin/env bash
# Kafka's own admin tools (official jars) for what librdkafka cannot do: SCRAM users and
# ACLs. Run against an operator listener (the local secure cluster's PLAINTEXT one).
#
#   kafka-admin.sh user BOOTSTRAP NAME        SCRAM-SHA-512 credentials for NAME; the
#                                             password is read from stdin
#   kafka-admin.sh acls BOOTSTRAP FILE        apply ACLs: one kafka-acls argument line
#                                             per invocation (`guardian topics acls`)
#   kafka-admin.sh list-acls BOOTSTRAP        print every ACL
#
# The jars: $GUARDIAN_KAFKA_LIBS (written to the stack's env file by stack.sh).
set -euo pipefail
die() { echo "kafka-admin: $*" >&2; exit 1; }
[ $# -ge 2 ] || die "usage: kafka-admin.sh user BOOTSTRAP NAME | acls BOOTSTRAP FILE | list-acls BOOTSTRAP"
LIBS=${GUARDIAN_KAFKA_LIBS:?GUARDIAN_KAFKA_LIBS is not set: source the stack env (tests/stack/stack.sh env)}
cmd=$1 bootstrap=$2
LOG4J=$(mktemp --suffix=.properties)
trap 'rm -f "$LOG4J"' EXIT
printf 'status = error\nrootLogger.level = error\n' >"$LOG4J"
kafka_tool() { java -Xms32m -Xmx256m -Dlog4j2.configurationFile="$LOG4J" -cp "$LIBS/*" "$@"; }

case $cmd in
  user)
    [ $# -eq 3 ] || die "usage: kafka-admin.sh user BOOTSTRAP NAME (password on stdin)"
    name=$3
    [[ $name =~ ^[A-Za-z0-9._-]+$ ]] || die "invalid user name: $name"
    IFS= read -r password || true
    [ ${#password} -ge 12 ] || die "the password for $name must have at least 12 characters"
    # The tool reads the credential from its argument list, which is visible to this
    # machine's users for the second it runs: acceptable on the local stack only.
    kafka_tool kafka.admin.ConfigCommand --bootstrap-server "$bootstrap" --alter --entity-type users \
      --entity-name "$name" --add-config "SCRAM-SHA-512=[iterations=8192,password=$password]" >/dev/null \
      || die "could not set the SCRAM credentials of $name"
    echo "kafka-admin: SCRAM-SHA-512 credentials set for $name"
    ;;
  acls)
    [ $# -eq 3 ] || die "usage: kafka-admin.sh acls BOOTSTRAP FILE"
    n=0
    while IFS= read -r line; do
      [ -n "$line" ] || continue
      # shellcheck disable=SC2086 # the line is a list of arguments
      kafka_tool org.apache.kafka.tools.AclCommand --bootstrap-server "$bootstrap" $line --force >/dev/null \
        || die "kafka-acls refused: $line"
      n=$((n + 1))
    done <"$3"
    echo "kafka-admin: applied $n ACL line(s) from $3"
    ;;
  list-acls)
    kafka_tool org.apache.kafka.tools.AclCommand --bootstrap-server "$bootstrap" --list
    ;;
  *) die "unknown command: $cmd" ;;
esac
