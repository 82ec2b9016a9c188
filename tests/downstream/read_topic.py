#!/usr/bin/env python3
"""A downstream reader that is not ours: decodes a Phoenix Guardian topic with only the
schema files of schemas/, an ordinary Kafka client (confluent-kafka) and an ordinary Avro
library (fastavro).

Records use Avro single-object encoding: the two bytes C3 01, the 8-byte little-endian
CRC-64-AVRO fingerprint of the writer schema's parsing canonical form, then the datum.
The reader finds the writer schema by that fingerprint, as the Avro specification says.

With --registry, it reads as an analytics team with a schema registry does, with no
schema files at all: confluent-kafka's SchemaRegistryClient fetches each record's writer
schema by the id in its Confluent framing (00, a 4-byte id, the datum), fastavro decodes.

Prints one JSON object per record (the decoded value plus partition, offset and schema
name) and reads from the beginning up to the end the topic had when it started.

  read_topic.py --bootstrap HOST:PORT --topic NAME --schemas DIR
  read_topic.py --bootstrap HOST:PORT --topic NAME --registry URL
  read_topic.py --fingerprints --schemas DIR     (schema name and header bytes, no Kafka)
"""

import argparse
import datetime
import glob
import io
import json
import os
import signal
import sys
import time

import fastavro
from confluent_kafka import Consumer, TopicPartition
from fastavro.schema import fingerprint, to_parsing_canonical_form

MAGIC = b"\xc3\x01"
EPOCH = datetime.datetime(1970, 1, 1, tzinfo=datetime.timezone.utc)


def plain(value):
    """JSON for what fastavro returns beyond JSON: bytes as hex, timestamps as epoch ms."""
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, datetime.datetime):
        return (value - EPOCH) // datetime.timedelta(milliseconds=1)
    raise TypeError(f"cannot print {type(value).__name__}")


def load_schemas(folder):
    by_fingerprint = {}
    for path in sorted(glob.glob(os.path.join(folder, "*.avsc"))):
        with open(path, encoding="utf-8") as f:
            parsed = fastavro.parse_schema(json.load(f))
        canonical = to_parsing_canonical_form(parsed)
        # fastavro prints the 8 bytes of the CRC-64-AVRO fingerprint in the order the
        # single-object header carries them (little-endian).
        by_fingerprint[bytes.fromhex(fingerprint(canonical, "CRC-64-AVRO"))] = parsed
    if not by_fingerprint:
        sys.exit(f"read_topic: no *.avsc files in {folder}")
    return by_fingerprint


def decode(payload, schemas):
    if payload is None or len(payload) < 10 or payload[:2] != MAGIC:
        raise ValueError("not Avro single-object encoding")
    schema = schemas.get(bytes(payload[2:10]))
    if schema is None:
        raise ValueError(f"unknown writer schema fingerprint {payload[2:10].hex()}")
    return schema["name"], fastavro.schemaless_reader(io.BytesIO(payload[10:]), schema, None)


_REGISTRY = {}


def registry_decode(payload, topic, url):
    """Confluent framing: the writer schema from the registry by the record's id, through
    confluent-kafka's own SchemaRegistryClient, then fastavro. (confluent-kafka 2.16's
    AvroDeserializer first asks the registry for topic "associations", a newer Confluent
    API; against Apicurio that call hung the reader in one CI run.)"""
    from confluent_kafka.schema_registry import SchemaRegistryClient

    if payload is None or len(payload) < 5 or payload[0] != 0:
        raise ValueError("not Confluent framing")
    schema_id = int.from_bytes(payload[1:5], "big")
    if url not in _REGISTRY:
        _REGISTRY[url] = (SchemaRegistryClient({"url": url, "timeout": 10}), {})
    client, parsed = _REGISTRY[url]
    if schema_id not in parsed:
        parsed[schema_id] = fastavro.parse_schema(json.loads(client.get_schema(schema_id).schema_str))
    schema = parsed[schema_id]
    return schema["name"], fastavro.schemaless_reader(io.BytesIO(payload[5:]), schema, None)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bootstrap")
    ap.add_argument("--topic")
    ap.add_argument("--schemas")
    ap.add_argument("--registry", help="a Confluent-compatible schema registry: decode Confluent framing with it")
    ap.add_argument("--timeout", type=float, default=60.0)
    ap.add_argument("--fingerprints", action="store_true", help="print each schema's fingerprint and exit")
    args = ap.parse_args()
    # Never hang a test run: a blocked network call ends the reader after its timeout.
    signal.signal(signal.SIGALRM, lambda *_: sys.exit(f"read_topic: no result in {args.timeout + 30:.0f}s"))
    signal.alarm(int(args.timeout) + 30)

    if not args.schemas and not args.registry:
        ap.error("--schemas or --registry is required")
    schemas = load_schemas(args.schemas) if args.schemas else None
    if args.fingerprints:
        for fp, schema in sorted(schemas.items(), key=lambda kv: kv[1]["name"]):
            print(schema["name"], fp.hex())
        return
    if not args.bootstrap or not args.topic:
        ap.error("--bootstrap and --topic are required to read a topic")
    consumer = Consumer(
        {
            "bootstrap.servers": args.bootstrap,
            "group.id": "downstream-reader",
            "enable.auto.commit": False,
            "isolation.level": "read_committed",
        }
    )
    meta = consumer.list_topics(args.topic, timeout=10)
    topic = meta.topics.get(args.topic)
    if topic is None or topic.error is not None:
        sys.exit(f"read_topic: topic {args.topic} not found")
    ends = {}
    assignment = []
    for p in topic.partitions:
        low, high = consumer.get_watermark_offsets(TopicPartition(args.topic, p), timeout=10)
        if high > low:
            ends[p] = high
            assignment.append(TopicPartition(args.topic, p, low))
    consumer.assign(assignment)
    deadline = time.monotonic() + args.timeout
    out = sys.stdout
    while ends:
        if time.monotonic() > deadline:
            sys.exit(f"read_topic: did not reach the end of {args.topic} in {args.timeout}s")
        msg = consumer.poll(0.5)
        if msg is None:
            # A partition whose tail is a transaction marker never delivers its last offset.
            for tp in consumer.position([TopicPartition(args.topic, p) for p in list(ends)]):
                if tp.offset >= ends.get(tp.partition, 0):
                    ends.pop(tp.partition, None)
            continue
        if msg.error():
            sys.exit(f"read_topic: {msg.error()}")
        if args.registry:
            name, value = registry_decode(msg.value(), args.topic, args.registry)
        else:
            name, value = decode(msg.value(), schemas)
        record = {"_partition": msg.partition(), "_offset": msg.offset(), "_schema": name, "value": value}
        out.write(json.dumps(record, default=plain) + "\n")
        if msg.offset() + 1 >= ends.get(msg.partition(), 0):
            ends.pop(msg.partition(), None)
    consumer.close()


if __name__ == "__main__":
    main()
