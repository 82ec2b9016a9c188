package org.phoenixguardian.peers;

import java.io.ByteArrayOutputStream;
import java.io.File;
import java.io.IOException;
import java.io.UncheckedIOException;
import java.nio.ByteBuffer;
import java.time.Duration;
import java.util.List;
import java.util.Properties;
import java.util.concurrent.CountDownLatch;

import org.HdrHistogram.Histogram;
import org.apache.avro.Schema;
import org.apache.avro.generic.GenericData;
import org.apache.avro.generic.GenericRecord;
import org.apache.avro.message.BinaryMessageDecoder;
import org.apache.avro.message.BinaryMessageEncoder;
import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.common.serialization.Deserializer;
import org.apache.kafka.common.serialization.Serde;
import org.apache.kafka.common.serialization.Serdes;
import org.apache.kafka.common.serialization.Serializer;
import org.apache.kafka.common.utils.Bytes;
import org.apache.kafka.streams.KafkaStreams;
import org.apache.kafka.streams.KeyValue;
import org.apache.kafka.streams.StreamsBuilder;
import org.apache.kafka.streams.StreamsConfig;
import org.apache.kafka.streams.errors.StreamsUncaughtExceptionHandler;
import org.apache.kafka.streams.kstream.Consumed;
import org.apache.kafka.streams.kstream.KGroupedStream;
import org.apache.kafka.streams.kstream.Materialized;
import org.apache.kafka.streams.kstream.Produced;
import org.apache.kafka.streams.kstream.TimeWindows;
import org.apache.kafka.streams.processor.TimestampExtractor;
import org.apache.kafka.streams.state.WindowStore;

/**
 * The Kafka Streams peer of the KPI rollup (`guardian-bench kpi` runs it beside the Rust
 * service on the same input): encounters in (Avro single-object encoding, keyed by
 * hospital), per-hospital minute, hour and day tumbling windows on the event time, each
 * window's counts, SOAP sums, ratings and generation-time percentiles from an HdrHistogram
 * of the same bounds and precision as the service's (1 ms to 1 h, 3 significant digits),
 * out as KpiRollup records keyed "hospital/WINDOW/start" to a compacted topic, under
 * exactly-once v2. Written the way the Kafka Streams documentation shows: the DSL's
 * windowed aggregations with their default record caches and commit interval.
 *
 * <p>What it does not do that the service does: deduplicate event ids, check signatures,
 * bound fields and event times, dead-letter, count late corrections (a record after the
 * grace period is dropped here), or roll up SLO events. Each of those is work the service
 * pays for and the peer does not.
 *
 * <p>Usage: KpiStreams BOOTSTRAP INPUT OUTPUT APPLICATION_ID ENCOUNTER_AVSC KPI_ROLLUP_AVSC
 * STATE_DIR [THREADS]
 */
public final class KpiStreams {
    /** Same bounds and precision as the service's sketch (guardian_rollups::window). */
    static final long SKETCH_MAX_MS = 3_600_000L;

    static final Duration GRACE = Duration.ofMinutes(5);

    record Size(String name, Duration length) {}

    static final List<Size> SIZES =
            List.of(new Size("MINUTE", Duration.ofMinutes(1)), new Size("HOUR", Duration.ofHours(1)), new Size("DAY", Duration.ofDays(1)));

    /** One window's KPIs for one hospital. */
    static final class Acc {
        long encounters;
        long soapExpected;
        long soapCompleted;
        long ratings;
        long ratingSum;
        Histogram generation;

        Acc() {
            this(new Histogram(1, SKETCH_MAX_MS, 3));
        }

        Acc(Histogram generation) {
            this.generation = generation;
        }

        Acc add(GenericRecord e) {
            encounters += 1;
            soapExpected += (Integer) e.get("soap_sections_expected");
            soapCompleted += (Integer) e.get("soap_sections_completed");
            Object rating = e.get("physician_rating");
            if (rating != null) {
                ratings += 1;
                ratingSum += (Integer) rating;
            }
            long ms = (Long) e.get("generation_ms");
            generation.recordValue(Math.min(Math.max(ms, 1), SKETCH_MAX_MS));
            return this;
        }

        Double percentile(double p) {
            return generation.getTotalCount() == 0 ? null : (double) generation.getValueAtPercentile(p);
        }
    }

    /**
     * The state stores' value serde: the counts, then the histogram's V2 encoding (what the
     * service stores in PostgreSQL). Kafka Streams serializes a window's value on every
     * update and deserializes it on every read: the encoding buffer is kept per thread and
     * a decoded histogram is allocated once.
     */
    static final class AccSerde implements Serde<Acc> {
        private static final ThreadLocal<ByteBuffer> BUFFER = ThreadLocal.withInitial(() -> ByteBuffer.allocate(0));

        @Override
        public Serializer<Acc> serializer() {
            return (topic, acc) -> {
                if (acc == null) {
                    return null;
                }
                int needed = 5 * Long.BYTES + acc.generation.getNeededByteBufferCapacity();
                ByteBuffer buf = BUFFER.get();
                if (buf.capacity() < needed) {
                    buf = ByteBuffer.allocate(needed);
                    BUFFER.set(buf);
                }
                buf.clear();
                buf.putLong(acc.encounters).putLong(acc.soapExpected).putLong(acc.soapCompleted).putLong(acc.ratings).putLong(acc.ratingSum);
                acc.generation.encodeIntoByteBuffer(buf);
                byte[] out = new byte[buf.position()];
                buf.flip().get(out);
                return out;
            };
        }

        @Override
        public Deserializer<Acc> deserializer() {
            return (topic, bytes) -> {
                if (bytes == null) {
                    return null;
                }
                ByteBuffer buf = ByteBuffer.wrap(bytes);
                long encounters = buf.getLong();
                long soapExpected = buf.getLong();
                long soapCompleted = buf.getLong();
                long ratings = buf.getLong();
                long ratingSum = buf.getLong();
                Acc acc = new Acc(Histogram.decodeFromByteBuffer(buf, 0));
                acc.encounters = encounters;
                acc.soapExpected = soapExpected;
                acc.soapCompleted = soapCompleted;
                acc.ratings = ratings;
                acc.ratingSum = ratingSum;
                return acc;
            };
        }
    }

    /** Avro single-object encoding (the topics' format) through Avro's own message codec. */
    static Serde<GenericRecord> avro(Schema schema) {
        BinaryMessageEncoder<GenericRecord> encoder = new BinaryMessageEncoder<>(GenericData.get(), schema);
        BinaryMessageDecoder<GenericRecord> decoder = new BinaryMessageDecoder<>(GenericData.get(), schema);
        Serializer<GenericRecord> ser = (topic, record) -> {
            if (record == null) {
                return null;
            }
            ByteArrayOutputStream out = new ByteArrayOutputStream(128);
            try {
                encoder.encode(record, out);
            } catch (IOException e) {
                throw new UncheckedIOException(e);
            }
            return out.toByteArray();
        };
        Deserializer<GenericRecord> de = (topic, bytes) -> {
            if (bytes == null) {
                return null;
            }
            try {
                return decoder.decode(bytes);
            } catch (IOException e) {
                throw new UncheckedIOException(e);
            }
        };
        return Serdes.serdeFrom(ser, de);
    }

    /** Windows follow the encounter's event time, as the service's do. */
    public static final class OccurredAt implements TimestampExtractor {
        @Override
        public long extract(ConsumerRecord<Object, Object> record, long partitionTime) {
            return record.value() instanceof GenericRecord e ? (Long) e.get("occurred_at") : partitionTime;
        }
    }

    static GenericRecord rollup(Schema schema, String hospital, String size, long start, Acc acc) {
        GenericRecord r = new GenericData.Record(schema);
        r.put("hospital_id", hospital);
        r.put("window", new GenericData.EnumSymbol(schema.getField("window").schema(), size));
        r.put("window_start", start);
        r.put("encounters", acc.encounters);
        r.put("soap_sections_expected", acc.soapExpected);
        r.put("soap_sections_completed", acc.soapCompleted);
        r.put("generation_ms_p50", acc.percentile(50.0));
        r.put("generation_ms_p95", acc.percentile(95.0));
        r.put("generation_ms_p99", acc.percentile(99.0));
        r.put("ratings", acc.ratings);
        r.put("rating_sum", acc.ratingSum);
        r.put("slo_good", 0L);
        r.put("slo_total", 0L);
        r.put("late_corrections", 0L);
        return r;
    }

    public static void main(String[] args) throws Exception {
        if (args.length < 7) {
            System.err.println("usage: KpiStreams BOOTSTRAP INPUT OUTPUT APPLICATION_ID ENCOUNTER_AVSC KPI_ROLLUP_AVSC STATE_DIR [THREADS]");
            System.exit(2);
        }
        Schema encounterSchema = new Schema.Parser().parse(new File(args[4]));
        Schema rollupSchema = new Schema.Parser().parse(new File(args[5]));

        Properties props = new Properties();
        props.put(StreamsConfig.BOOTSTRAP_SERVERS_CONFIG, args[0]);
        props.put(StreamsConfig.APPLICATION_ID_CONFIG, args[3]);
        props.put(StreamsConfig.STATE_DIR_CONFIG, args[6]);
        props.put(StreamsConfig.PROCESSING_GUARANTEE_CONFIG, StreamsConfig.EXACTLY_ONCE_V2);
        props.put(StreamsConfig.NUM_STREAM_THREADS_CONFIG, args.length > 7 ? Integer.parseInt(args[7]) : 1);
        props.put(StreamsConfig.DEFAULT_TIMESTAMP_EXTRACTOR_CLASS_CONFIG, OccurredAt.class);

        StreamsBuilder builder = new StreamsBuilder();
        Serde<GenericRecord> encounters = avro(encounterSchema);
        Serde<GenericRecord> rollups = avro(rollupSchema);
        AccSerde accSerde = new AccSerde();
        // Records are keyed by hospital: grouping by key needs no repartition topic.
        KGroupedStream<String, GenericRecord> byHospital =
                builder.stream(args[1], Consumed.with(Serdes.String(), encounters)).groupByKey();
        for (Size size : SIZES) {
            byHospital
                    .windowedBy(TimeWindows.ofSizeAndGrace(size.length(), GRACE))
                    .aggregate(
                            Acc::new,
                            (hospital, encounter, acc) -> acc.add(encounter),
                            Materialized.<String, Acc, WindowStore<Bytes, byte[]>>as("kpi-" + size.name().toLowerCase())
                                    .withKeySerde(Serdes.String())
                                    .withValueSerde(accSerde))
                    .toStream()
                    .map((window, acc) -> {
                        String hospital = window.key();
                        long start = window.window().start();
                        return KeyValue.pair(hospital + "/" + size.name() + "/" + start, rollup(rollupSchema, hospital, size.name(), start, acc));
                    })
                    .to(args[2], Produced.with(Serdes.String(), rollups));
        }

        KafkaStreams streams = new KafkaStreams(builder.build(), props);
        CountDownLatch failed = new CountDownLatch(1);
        streams.setUncaughtExceptionHandler(e -> {
            e.printStackTrace();
            failed.countDown();
            return StreamsUncaughtExceptionHandler.StreamThreadExceptionResponse.SHUTDOWN_CLIENT;
        });
        // SIGTERM (how the benchmark stops it) closes the client: its last transaction commits.
        Runtime.getRuntime().addShutdownHook(new Thread(() -> streams.close(Duration.ofSeconds(30))));
        streams.start();
        failed.await();
        streams.close(Duration.ofSeconds(30));
        System.exit(1);
    }
}
