"""How long an idempotent librdkafka producer waits before it sends, and what it sends at
once it is ready: Python's confluent-kafka (its own librdkafka) on the local broker.

    $GUARDIAN_PYTHON tests/kafka/producer_startup.py [--records N] [--rounds R]

Each row: 300,000 records of 300 bytes (by default) into a fresh 3-partition topic,
acks=all, linger.ms=5; "cold" times from the producer's creation, "ready" from after a
first record was acknowledged (on another topic); the start-up is creation → that first
acknowledgement. Each round ends with a transactional producer's start-up: creation →
init_transactions → one record committed (no throughput row: its records wait for
commits). Needs GUARDIAN_KAFKA_BOOTSTRAP (tests/stack/stack.sh env).
"""

import argparse
import os
import time
import uuid

from confluent_kafka import Producer, libversion
from confluent_kafka.admin import AdminClient, NewTopic


def fresh_topics(admin, names):
    futures = admin.create_topics([NewTopic(n, 3, 1) for n in names])
    for f in futures.values():
        f.result()


def run(boot, topic, warm_topic, records, idempotent, ready):
    payload = os.urandom(300)
    created = time.monotonic()
    p = Producer({"bootstrap.servers": boot, "acks": "all", "linger.ms": 5,
                  "enable.idempotence": idempotent})
    start_up = None
    if ready:
        acked = []
        p.produce(warm_topic, payload, key=b"w", on_delivery=lambda e, m: acked.append(time.monotonic()))
        p.flush(30)
        if not acked:
            raise SystemExit("the warm-up record was not acknowledged in 30 s")
        start_up = acked[0] - created
    started = time.monotonic() if ready else created
    for i in range(records):
        while True:
            try:
                p.produce(topic, payload, key=b"h%03d" % (i % 50))
                break
            except BufferError:
                p.poll(0.001)
        if i % 1000 == 0:
            p.poll(0)
    if p.flush(60) != 0:
        raise SystemExit("records left undelivered after 60 s")
    return records / (time.monotonic() - started), start_up


def transactional_start_up(boot, topic):
    """Creation → first record acknowledged, for a transactional producer."""
    acked = []
    created = time.monotonic()
    p = Producer({"bootstrap.servers": boot, "acks": "all", "linger.ms": 5,
                  "transactional.id": f"startup-probe-{uuid.uuid4().hex}"})
    p.init_transactions(30)
    p.begin_transaction()
    p.produce(topic, b"x", key=b"w", on_delivery=lambda e, m: acked.append(time.monotonic()))
    p.commit_transaction(30)
    if not acked:
        raise SystemExit("the transactional record was not acknowledged")
    return acked[0] - created


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--records", type=int, default=300_000)
    ap.add_argument("--rounds", type=int, default=2)
    args = ap.parse_args()
    boot = os.environ.get("GUARDIAN_KAFKA_BOOTSTRAP")
    if not boot:
        raise SystemExit("GUARDIAN_KAFKA_BOOTSTRAP is not set: source .stack/env first")
    admin = AdminClient({"bootstrap.servers": boot})
    tag = uuid.uuid4().hex[:8]
    warm = f"bench.startup-warm.{tag}"
    fresh_topics(admin, [warm])
    created = [warm]
    print(f"confluent-kafka on librdkafka {libversion()[0]}, {args.records} records of 300 bytes")
    print()
    print("| producer | records/s | creation → first acknowledgement |")
    print("|---|---:|---:|")
    try:
        for r in range(args.rounds):
            for idempotent in (True, False):
                for ready in (False, True):
                    topic = f"bench.startup.{tag}.{r}.{int(idempotent)}{int(ready)}"
                    fresh_topics(admin, [topic])
                    created.append(topic)
                    rate, start_up = run(boot, topic, warm, args.records, idempotent, ready)
                    name = f"{'idempotent' if idempotent else 'not idempotent'}, {'ready' if ready else 'cold'}"
                    shown = f"{1000 * start_up:.0f} ms" if start_up is not None else ""
                    print(f"| {name} | {rate:.0f} | {shown} |", flush=True)
            start_up = transactional_start_up(boot, warm)
            print(f"| transactional (init_transactions), one record | | {1000 * start_up:.0f} ms |", flush=True)
    finally:
        admin.delete_topics(created)


if __name__ == "__main__":
    main()
