//! The encoded bytes of every message are a contract with data already on disk: each
//! message round-trips, and its bytes are pinned by a snapshot so that any change shows up
//! in review.

use triggers_proto::{
    BacklogEntry, BindingStats, Checkpoint, DeliveryAttempt, DeliveryRecord, DeliveryState,
    Message, ProducerEntry, Source, Timestamp, TransactionStats, TriggerParams,
};

fn hex(bytes: &[u8]) -> String {
    bytes
        .chunks(32)
        .map(|line| line.iter().map(|b| format!("{b:02x}")).collect::<String>())
        .collect::<Vec<_>>()
        .join("\n")
}

fn round_trip<M: Message + Default + PartialEq + std::fmt::Debug>(message: &M) -> String {
    let bytes = message.encode_to_vec();
    assert_eq!(&M::decode(bytes.as_slice()).expect("decodes"), message);
    hex(&bytes)
}

#[test]
fn checkpoint_bytes() {
    let checkpoint = Checkpoint {
        sources: [(
            "acmeCo/orders/pivot=00".to_string(),
            Source {
                read_through: 123_456,
                producers: vec![ProducerEntry {
                    id: vec![0x0b, 0, 0, 0, 0, 1],
                    last_ack: 0x1eec_a4a5_9b4c_5f0d,
                    begin: -1,
                }],
            },
        )]
        .into(),
        ack_intents: [("acmeCo/acks".to_string(), b"ack".to_vec())].into(),
    };
    insta::assert_snapshot!(round_trip(&checkpoint));
}

/// Issue 14 (ordered maps): a checkpoint's maps encode in key order, whatever order their
/// entries were inserted in, so the same checkpoint always writes the same bytes (with
/// hash maps, the bytes of a multi-entry map changed from one process to the next).
#[test]
fn ordered_maps_checkpoint_bytes() {
    let journals = [
        "acmeCo/c/pivot=00",
        "acmeCo/a/pivot=00",
        "acmeCo/b/pivot=00",
    ];
    let source = |read_through| Source {
        read_through,
        producers: vec![ProducerEntry {
            id: vec![0x0b, 0, 0, 0, 0, 1],
            last_ack: 0x1eec_a4a5_9b4c_5f0d,
            begin: -1,
        }],
    };
    let offset = |i: usize| i64::try_from(i).expect("small") * 100;
    let checkpoint = |order: &[usize]| {
        let mut checkpoint = Checkpoint::default();
        for &i in order {
            checkpoint
                .sources
                .insert(journals[i].to_string(), source(offset(i)));
            checkpoint.ack_intents.insert(
                format!("acmeCo/acks/{i}"),
                vec![u8::try_from(i).expect("small")],
            );
        }
        checkpoint
    };
    let bytes = checkpoint(&[0, 1, 2]).encode_to_vec();
    for order in [[2, 1, 0], [1, 0, 2], [0, 2, 1]] {
        assert_eq!(
            checkpoint(&order).encode_to_vec(),
            bytes,
            "inserted in {order:?}"
        );
    }
    // A map field is its entries one after the other: here in key order.
    let mut by_journal = [0, 1, 2];
    by_journal.sort_by_key(|&i| journals[i]);
    let mut in_key_order = Vec::new();
    for i in by_journal {
        let one = Checkpoint {
            sources: [(journals[i].to_string(), source(offset(i)))].into(),
            ..Default::default()
        };
        in_key_order.extend(one.encode_to_vec());
    }
    for i in 0..journals.len() {
        let one = Checkpoint {
            ack_intents: [(
                format!("acmeCo/acks/{i}"),
                vec![u8::try_from(i).expect("small")],
            )]
            .into(),
            ..Default::default()
        };
        in_key_order.extend(one.encode_to_vec());
    }
    assert_eq!(bytes, in_key_order);
    insta::assert_snapshot!(round_trip(&checkpoint(&[2, 0, 1])));
}

#[test]
fn transaction_stats_bytes() {
    let stats = TransactionStats {
        bindings: vec![BindingStats {
            binding: 2,
            docs: 10,
            bytes: 2048,
            first_clock: 0x1eec_a4a5_9b4c_5f00,
            last_clock: 0x1eec_a4a5_9b4c_5f0d,
        }],
    };
    insta::assert_snapshot!(round_trip(&stats));
}

/// Version 1, as the first release wrote it: these bytes are on disk and must keep decoding.
#[test]
fn trigger_params_bytes() {
    insta::assert_snapshot!(round_trip(&params_v1()));
}

/// Version 2 adds the commit sequence range and transaction count.
#[test]
fn trigger_params_v2_bytes() {
    let params = TriggerParams {
        version: 2,
        first_commit_seq: 7,
        last_commit_seq: 9,
        transaction_count: 3,
        ..params_v1()
    };
    insta::assert_snapshot!(round_trip(&params));
}

/// Issue 18: version 3 adds Flow's `run_id` (field 11, appended; absent when empty, so
/// params written before keep their bytes, pinned above).
#[test]
fn trigger_params_v3_run_id_bytes() {
    let params = TriggerParams {
        version: 3,
        first_commit_seq: 7,
        last_commit_seq: 9,
        transaction_count: 3,
        run_id: "2024-01-15T08:30:00.000Z".to_string(),
        ..params_v1()
    };
    insta::assert_snapshot!(round_trip(&params));
}

#[test]
fn backlog_entry_bytes() {
    let entry = BacklogEntry {
        params: Some(TriggerParams {
            version: 2,
            first_commit_seq: 4,
            last_commit_seq: 4,
            transaction_count: 1,
            ..params_v1()
        }),
        committed_at: Some(Timestamp {
            seconds: 1_700_000_300,
            nanos: 5,
        }),
    };
    insta::assert_snapshot!(round_trip(&entry));
}

/// A delivery's ledger record, with one attempt.
#[test]
fn delivery_record_bytes() {
    let record = DeliveryRecord {
        trigger: 1,
        first_commit_seq: 4,
        last_commit_seq: 6,
        transaction_count: 3,
        flow_run_id: "6f1c2d7e-0000-4000-8000-000000000001".to_string(),
        state: DeliveryState::Failed as i32,
        committed_at: Some(Timestamp {
            seconds: 1_700_000_300,
            nanos: 5,
        }),
        updated_at: Some(Timestamp {
            seconds: 1_700_000_301,
            nanos: 0,
        }),
        attempts: vec![DeliveryAttempt {
            number: 1,
            at: Some(Timestamp {
                seconds: 1_700_000_300,
                nanos: 9,
            }),
            status: 422,
            latency_micros: 1500,
            error: "endpoint answered HTTP 422".to_string(),
            reason: "first-send".to_string(),
            already_delivered: false,
            trace_id: Vec::new(),
            span_id: Vec::new(),
        }],
        cancel_reason: String::new(),
        error: "trigger 1 (https://x): endpoint answered HTTP 422".to_string(),
        already_delivered: false,
        // Records of earlier builds have no name: their bytes are the contract above.
        trigger_name: String::new(),
        dead_letter: false,
        entry: None,
        replay: false,
    };
    insta::assert_snapshot!(round_trip(&record));
    // Issue 18: a record keyed by its trigger's name carries it.
    let named = DeliveryRecord {
        trigger_name: "onCommit".to_string(),
        ..record
    };
    insta::assert_snapshot!("delivery_record_bytes_named", round_trip(&named));
    // Issue 17: a dead letter keeps what it sends (fields 14 and 15, appended; absent
    // in other records, so theirs keep their bytes).
    let dead = DeliveryRecord {
        dead_letter: true,
        entry: Some(BacklogEntry {
            params: Some(TriggerParams {
                first_commit_seq: 4,
                last_commit_seq: 6,
                ..Default::default()
            }),
            committed_at: Some(Timestamp {
                seconds: 1_700_000_300,
                nanos: 5,
            }),
        }),
        ..named
    };
    insta::assert_snapshot!("delivery_record_bytes_dead_letter", round_trip(&dead));
    // What retention reads of a record: its head, under the same field numbers.
    let head = triggers_proto::DeliveryRecordHead::decode(dead.encode_to_vec().as_slice())
        .expect("a record decodes as its head");
    assert_eq!(
        (
            head.first_commit_seq,
            head.state(),
            head.updated_at,
            head.trigger_name.as_str()
        ),
        (4, DeliveryState::Failed, dead.updated_at, "onCommit")
    );
}

/// Issue 13: a SUCCESS the receiver said it already had (`responses.alreadyDelivered`),
/// flagged on the record and its attempt (fields 12 and 7, appended; absent when false,
/// so records written before keep their bytes).
#[test]
fn delivery_record_already_delivered_bytes() {
    let record = DeliveryRecord {
        trigger: 0,
        first_commit_seq: 1,
        last_commit_seq: 1,
        transaction_count: 1,
        flow_run_id: "6f1c2d7e-0000-4000-8000-000000000001".to_string(),
        state: DeliveryState::Success as i32,
        attempts: vec![DeliveryAttempt {
            number: 2,
            status: 409,
            reason: "recovery-refire".to_string(),
            already_delivered: true,
            ..Default::default()
        }],
        already_delivered: true,
        ..Default::default()
    };
    insta::assert_snapshot!(round_trip(&record));
}

/// Issue 13: an attempt keeps the trace context its request carried (fields 8 and 9,
/// appended; absent when empty, so records written before keep their bytes).
#[test]
fn delivery_attempt_trace_context_bytes() {
    let record = DeliveryRecord {
        trigger: 0,
        first_commit_seq: 1,
        last_commit_seq: 1,
        transaction_count: 1,
        state: DeliveryState::Success as i32,
        attempts: vec![DeliveryAttempt {
            number: 1,
            status: 200,
            reason: "first-send".to_string(),
            trace_id: (1..=16).collect(),
            span_id: (0xa1..=0xa8).collect(),
            ..Default::default()
        }],
        ..Default::default()
    };
    insta::assert_snapshot!(round_trip(&record));
}

/// Records written before issue 13 (the bytes pinned by `delivery_record_bytes`) decode
/// as not already delivered.
#[test]
fn delivery_records_written_before_already_delivered_decode_as_not_already_delivered() {
    let pinned = "08011004180620032a2436663163326437652d303030302d343030302d383030\
        302d30303030303030303030303130033a0808ace4cfaa061005420608ade4cf\
        aa064a3a0801120808ace4cfaa06100918a60320dc0b2a1a656e64706f696e74\
        20616e737765726564204854545020343232320a66697273742d73656e645a31\
        747269676765722031202868747470733a2f2f78293a20656e64706f696e7420\
        616e737765726564204854545020343232";
    let bytes: Vec<u8> = (0..pinned.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&pinned[i..i + 2], 16).expect("hex"))
        .collect();
    let record = DeliveryRecord::decode(bytes.as_slice()).expect("decodes");
    assert_eq!(record.state(), DeliveryState::Failed);
    assert_eq!(record.attempts[0].status, 422);
    assert!(!record.already_delivered);
    assert!(!record.attempts[0].already_delivered);
    assert!(record.attempts[0].trace_id.is_empty() && record.attempts[0].span_id.is_empty());
}

fn params_v1() -> TriggerParams {
    TriggerParams {
        version: 1,
        materialization_name: "acmeCo/orders/postgres".to_string(),
        collection_names: vec!["acmeCo/orders".to_string(), "acmeCo/customers".to_string()],
        connector_image: "ghcr.io/estuary/materialize-postgres:v1".to_string(),
        flow_published_at_min: Some(Timestamp {
            seconds: 1_700_000_000,
            nanos: 100,
        }),
        flow_published_at_max: Some(Timestamp {
            seconds: 1_700_000_200,
            nanos: 1_234_500,
        }),
        flow_run_id: "6f1c2d7e-0000-4000-8000-000000000001".to_string(),
        ..Default::default()
    }
}

/// A reader of today's layout must accept bytes written with fields it does not know
/// (a later version), and bytes missing fields (an earlier one).
#[test]
fn trigger_params_tolerate_unknown_and_missing_fields() {
    let mut bytes = TriggerParams {
        version: 1,
        flow_run_id: "run".to_string(),
        ..Default::default()
    }
    .encode_to_vec();
    // Field 99, wire type 2 (length-delimited), 3 bytes.
    bytes.extend_from_slice(&[0x9a, 0x06, 0x03, b'n', b'e', b'w']);
    let decoded = TriggerParams::decode(bytes.as_slice()).expect("skips unknown fields");
    assert_eq!(decoded.flow_run_id, "run");

    let empty = TriggerParams::decode(&[][..]).expect("all fields optional");
    assert_eq!(empty.version, 0);
}

/// Issue 14 (enums instead of status strings): the sidecar's Status and TestFire answers
/// carry enums. Their fields took new numbers and the old string ones are reserved, so
/// an answer from a sidecar built before decodes here (the strings skipped as unknown
/// fields), and a new answer's enums are the varints pinned below.
#[test]
fn sidecar_status_enums_bytes_and_old_string_answers() {
    use triggers_proto::sidecar::{
        AttemptOutcome, BacklogQueue, DeliveryMode, DrainMode, ShardPhase, StatusResponse,
        TestFireResponse,
    };
    let status = StatusResponse {
        open: true,
        phase: ShardPhase::Backpressured.into(),
        delivery_mode: DeliveryMode::Decoupled.into(),
        backlog: vec![BacklogQueue {
            trigger: 1,
            drain: DrainMode::Coalesced.into(),
            depth: 3,
            ..Default::default()
        }],
        ..Default::default()
    };
    assert_eq!(round_trip(&status), "0801520608011803480370067802");
    let fired = TestFireResponse {
        status: 409,
        outcome: AttemptOutcome::AlreadyDelivered.into(),
        ..Default::default()
    };
    assert_eq!(round_trip(&fired), "18990348 02".replace(' ', ""));

    // As a sidecar built before the enums encoded them: phase (2) and delivery_mode (9)
    // as strings, a queue's drain (2) as a string, test-fire's outcome (8) as a string.
    let old_status = [
        &[0x08, 0x01][..],
        &[0x12, 4],
        b"idle",
        &[0x4a, 7],
        b"waiting",
        &[0x52, 11, 0x08, 0x01, 0x12, 7],
        b"ordered",
    ]
    .concat();
    let decoded = StatusResponse::decode(old_status.as_slice()).expect("decodes");
    assert!(decoded.open);
    assert_eq!(
        decoded.phase(),
        ShardPhase::Closed,
        "the string is not misread"
    );
    assert_eq!(decoded.delivery_mode(), DeliveryMode::Unspecified);
    assert_eq!(decoded.backlog[0].trigger, 1);
    assert_eq!(decoded.backlog[0].drain(), DrainMode::Unspecified);
    let old_fired = [&[0x18, 0x99, 0x03, 0x42, 9][..], b"delivered"].concat();
    let decoded = TestFireResponse::decode(old_fired.as_slice()).expect("decodes");
    assert_eq!(
        (decoded.status, decoded.outcome()),
        (409, AttemptOutcome::Unspecified)
    );
}

/// Issue 16 (many shards per process): every per-shard request names its shard in a new
/// field, so a request of a client built before (no such field) decodes as one for the
/// default shard (`""`), and a new one's bytes are pinned below.
#[test]
fn sidecar_requests_name_their_shard_bytes() {
    use triggers_proto::sidecar::{
        AcknowledgedRequest, AwaitDeliveryRequest, AwaitDrainedRequest, CloseRequest,
        CloseResponse, DeliveryRef, ListDeliveriesRequest, OpenRequest, StartCommitRequest,
        StatusRequest,
    };
    let shard = || "a/b".to_string();
    assert_eq!(
        round_trip(&OpenRequest {
            shard: shard(),
            ..Default::default()
        }),
        "1203612f62"
    );
    assert_eq!(
        round_trip(&StartCommitRequest {
            shard: shard(),
            ..Default::default()
        }),
        "2203612f62"
    );
    assert_eq!(
        round_trip(&AcknowledgedRequest {
            wait: true,
            shard: shard(),
        }),
        "08011203612f62"
    );
    assert_eq!(
        round_trip(&AwaitDeliveryRequest {
            delivery_id: 7,
            shard: shard(),
        }),
        "08071203612f62"
    );
    assert_eq!(round_trip(&StatusRequest { shard: shard() }), "0a03612f62");
    assert_eq!(
        round_trip(&AwaitDrainedRequest { shard: shard() }),
        "0a03612f62"
    );
    assert_eq!(
        round_trip(&ListDeliveriesRequest {
            shard: shard(),
            ..Default::default()
        }),
        "1a03612f62"
    );
    assert_eq!(
        round_trip(&DeliveryRef {
            shard: shard(),
            ..Default::default()
        }),
        "2203612f62"
    );
    assert_eq!(round_trip(&CloseRequest { shard: shard() }), "0a03612f62");
    assert_eq!(round_trip(&CloseResponse { was_open: true }), "0801");

    // As a client built before shards encoded them: the default shard.
    let old_ack = AcknowledgedRequest::decode(&[0x08, 0x01][..]).expect("decodes");
    assert_eq!((old_ack.wait, old_ack.shard.as_str()), (true, ""));
    let old_status = StatusRequest::decode(&[][..]).expect("decodes");
    assert_eq!(old_status.shard, "");
    let old_ref = DeliveryRef::decode(&[0x08, 0x02, 0x10, 0x05][..]).expect("decodes");
    assert_eq!(
        (
            old_ref.trigger,
            old_ref.first_commit_seq,
            old_ref.shard.as_str()
        ),
        (2, 5, "")
    );
}
