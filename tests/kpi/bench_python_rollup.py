"""The peer of `guardian-bench kpi`: a straightforward Python consumer (confluent-kafka +
fastavro) doing the same rollup in memory: decode each encounter, add it to its hospital's
minute, hour and day windows (counts, SOAP sums, ratings, generation times for
percentiles). Prints one JSON object: records and seconds.

Usage: python bench_python_rollup.py BOOTSTRAP TOPIC RECORDS SCHEMA_FILE
"""

import io
import json
import sys
import time
from collections import defaultdict

import fastavro
from confluent_kafka import Consumer, TopicPartition


def main():
    bootstrap, topic, records, schema_file = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
    schema = fastavro.parse_schema(json.load(open(schema_file)))
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"py-bench-{time.time()}",
                         "auto.offset.reset": "earliest", "enable.auto.commit": False})
    md = consumer.list_topics(topic, timeout=10)
    consumer.assign([TopicPartition(topic, p, 0) for p in md.topics[topic].partitions])
    windows = defaultdict(lambda: [0, 0, 0, 0, 0, []])
    sizes = [("MINUTE", 60_000), ("HOUR", 3_600_000), ("DAY", 86_400_000)]
    seen = set()
    done = 0
    start = time.perf_counter()
    while done < records:
        for m in consumer.consume(1000, timeout=1.0):
            if m.error():
                continue
            e = fastavro.schemaless_reader(io.BytesIO(m.value()[10:]), schema)
            done += 1
            if e["event_id"] in seen:
                continue
            seen.add(e["event_id"])
            for name, ms in sizes:
                w = windows[(e["hospital_id"], name, e["occurred_at"] // ms * ms if isinstance(e["occurred_at"], int) else 0)]
                w[0] += 1
                w[1] += e["soap_sections_expected"]
                w[2] += e["soap_sections_completed"]
                if e["physician_rating"] is not None:
                    w[3] += 1
                    w[4] += e["physician_rating"]
                w[5].append(e["generation_ms"])
    for w in windows.values():
        g = sorted(w[5])
        w[5] = [g[int(len(g) * q) - 1 if int(len(g) * q) > 0 else 0] for q in (0.5, 0.95, 0.99)]
    seconds = time.perf_counter() - start
    consumer.close()
    print(json.dumps({"records": done, "seconds": seconds, "windows": len(windows)}))


if __name__ == "__main__":
    main()
