//! The reference consumer: plays the reactor of a Gazette-style consumer for one shard.
//!
//! It reads documents (JSON lines, each with a `_meta/uuid` and a `collection`) from an
//! input file, groups them into transactions of K documents, and drives a shard through
//! StartCommit and Acknowledged, either in-process ([`Driver::Local`]) or through a
//! sidecar over gRPC ([`Driver::Sidecar`]). Its checkpoint records the byte offset read
//! through, so after a restart it resumes exactly there and reproduces the same
//! transactions. It is the demo's engine and the crash tests' driver.

use prost::Message as _;
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use triggers::Clock;
use triggers_proto::sidecar::{
    AcknowledgedRequest, AwaitDrainedRequest, OpenRequest, StartCommitRequest, StateEntry, StateOp,
};
use triggers_proto::{BindingStats, Checkpoint, ProducerEntry};
use triggers_runtime::rocksdb;
use triggers_runtime::{Durability, Keyspace, Shard, ShardConfig, Store, TransactionStats};

/// The journal name under which the consumer checkpoints its input file.
pub const INPUT_JOURNAL: &str = "input";

/// One document of the input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Document {
    /// The binding reading its collection.
    pub binding: u32,
    /// The clock of its `_meta/uuid`.
    pub clock: Clock,
    /// The producer (node) id of its `_meta/uuid`.
    pub producer: [u8; 6],
    /// Byte offset of the end of its line in the input: the checkpoint after it.
    pub end_offset: i64,
    /// Size of its line.
    pub bytes: u64,
}

/// Input the consumer cannot use.
#[derive(Debug, thiserror::Error)]
pub enum InputError {
    /// The file cannot be read.
    #[error("reading {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A line is not a usable document.
    #[error("line {line}: {reason}")]
    Document {
        /// 1-based line number.
        line: usize,
        /// What is wrong.
        reason: String,
    },
}

/// Reads every document of a JSON-lines input. `bindings` maps collections to bindings.
pub fn read_documents(path: &Path, bindings: &[String]) -> Result<Vec<Document>, InputError> {
    let text = std::fs::read_to_string(path).map_err(|source| InputError::Read {
        path: path.display().to_string(),
        source,
    })?;
    parse_documents(&text, bindings)
}

/// Parses JSON-lines documents; see [`read_documents`].
pub fn parse_documents(text: &str, bindings: &[String]) -> Result<Vec<Document>, InputError> {
    let mut documents = Vec::new();
    let mut offset = 0i64;
    for (index, line) in text.split_inclusive('\n').enumerate() {
        offset += line.len() as i64;
        if line.trim().is_empty() {
            continue;
        }
        let fail = |reason: String| InputError::Document {
            line: index + 1,
            reason,
        };
        let doc: serde_json::Value =
            serde_json::from_str(line).map_err(|err| fail(format!("not JSON: {err}")))?;
        let uuid = doc
            .pointer("/_meta/uuid")
            .and_then(|v| v.as_str())
            .ok_or_else(|| fail("no `_meta/uuid` string".to_string()))?;
        let collection = doc
            .get("collection")
            .and_then(|v| v.as_str())
            .ok_or_else(|| fail("no `collection` string".to_string()))?;
        let binding = bindings
            .iter()
            .position(|c| c == collection)
            .ok_or_else(|| fail(format!("collection {collection:?} has no binding")))?;
        let parsed = uuid::Uuid::parse_str(uuid).map_err(|err| fail(err.to_string()))?;
        let clock = Clock::from_uuid(&parsed).map_err(|err| fail(err.to_string()))?;
        let node = &parsed.as_bytes()[10..];
        documents.push(Document {
            binding: binding as u32,
            clock,
            producer: [node[0], node[1], node[2], node[3], node[4], node[5]],
            end_offset: offset,
            bytes: line.len() as u64,
        });
    }
    Ok(documents)
}

/// How the consumer reaches its shard.
pub enum Driver {
    /// The library, in this process.
    Local {
        /// Opens the shard (again, after a failure).
        open: Box<dyn Fn() -> OpenShard + Send + Sync>,
        /// The open shard (boxed: it is large beside a gRPC client).
        shard: Option<Box<Shard>>,
    },
    /// A sidecar, over gRPC.
    Sidecar(crate::Client),
    /// A sidecar started with `--state-in-consumer`, over gRPC: the consumer's own RocksDB
    /// holds its checkpoint and the sidecar's keys (under `sidecar/`), written in one
    /// WriteBatch per StartCommit, as a Gazette consumer's store would.
    SidecarState(Box<SidecarState>),
    /// The library in this process, on a shard inside the consumer's own RocksDB: the
    /// consumer keeps its checkpoint there (at the root key `checkpoint`, as Flow's
    /// runtime does) and writes the shard's keys in the same WriteBatch.
    Host(Box<HostShard>),
}

/// The consumer as a host of the runtime: its own RocksDB, the shard in a keyspace of it.
pub struct HostShard {
    /// The consumer's DB.
    pub db: Arc<rocksdb::DB>,
    /// The shard's keyspace in it.
    pub keyspace: Keyspace,
    /// The shard's config.
    pub config: ShardConfig,
    /// Whether the consumer's writes are synced.
    pub durability: Durability,
    /// The open shard.
    pub shard: Option<Shard>,
}

/// A consumer holding a `--state-in-consumer` sidecar's state in its own store.
pub struct SidecarState {
    /// The sidecar.
    pub client: crate::Client,
    /// The consumer's DB.
    pub db: Arc<rocksdb::DB>,
}

/// Where the consumer keeps the sidecar's keys in its DB.
pub const SIDECAR_STATE_PREFIX: &[u8] = b"sidecar/";

impl SidecarState {
    /// The sidecar's keys as the consumer's store recovered them.
    fn recovered(&self) -> anyhow::Result<Vec<StateEntry>> {
        let mut entries = Vec::new();
        for item in self.db.prefix_iterator(SIDECAR_STATE_PREFIX) {
            let (key, value) = item?;
            let Some(key) = key.strip_prefix(SIDECAR_STATE_PREFIX) else {
                break;
            };
            entries.push(StateEntry {
                key: key.to_vec(),
                value: value.to_vec(),
            });
        }
        Ok(entries)
    }

    /// Writes `ops` (and the checkpoint, when given) in one synced WriteBatch.
    async fn write(&self, checkpoint: Option<&Checkpoint>, ops: &[StateOp]) -> anyhow::Result<()> {
        let mut batch = rocksdb::WriteBatch::default();
        if let Some(checkpoint) = checkpoint {
            batch.put(HOST_CHECKPOINT_KEY, checkpoint.encode_to_vec());
        }
        for op in ops {
            let mut key = SIDECAR_STATE_PREFIX.to_vec();
            key.extend_from_slice(&op.key);
            if op.delete {
                batch.delete(key);
            } else {
                batch.put(key, &op.value);
            }
        }
        let db = self.db.clone();
        tokio::task::spawn_blocking(move || {
            let mut options = rocksdb::WriteOptions::default();
            options.set_sync(true);
            db.write_opt(batch, &options)
        })
        .await??;
        Ok(())
    }
}

/// The consumer's own key of its checkpoint, in its DB (as Flow's runtime names it).
pub const HOST_CHECKPOINT_KEY: &[u8] = b"checkpoint";

/// The checkpoint a consumer keeps in its own DB (empty for a new one): where a
/// consumer that is a host, or holds its sidecar's state, resumes.
pub fn host_checkpoint(db: &rocksdb::DB) -> anyhow::Result<Checkpoint> {
    Ok(match db.get(HOST_CHECKPOINT_KEY)? {
        Some(bytes) => Checkpoint::decode(bytes.as_slice())?,
        None => Checkpoint::default(),
    })
}

impl HostShard {
    fn shard(&mut self) -> anyhow::Result<&mut Shard> {
        self.shard
            .as_mut()
            .ok_or_else(|| anyhow::anyhow!("not open"))
    }

    /// The consumer's StartCommit: its checkpoint and the shard's writes in one batch.
    async fn start_commit(
        &mut self,
        checkpoint: &Checkpoint,
        stats: &[BindingStats],
        started_at: std::time::SystemTime,
    ) -> anyhow::Result<Option<String>> {
        let synced = self.durability == Durability::Synced;
        let db = self.db.clone();
        let shard = self.shard()?;
        let prepared = shard.prepare_commit(stats, started_at).await?;
        let mut batch = rocksdb::WriteBatch::default();
        batch.put(HOST_CHECKPOINT_KEY, checkpoint.encode_to_vec());
        prepared.write_into(&mut batch);
        #[cfg(feature = "failpoints")]
        fail::fail_point!("consumer.before_host_write");
        let mut options = rocksdb::WriteOptions::default();
        options.set_sync(synced);
        // A failed write may or may not have landed: the prepared commit is dropped
        // unreported, and the run fails (a restart recovers whatever landed).
        let written = tokio::task::spawn_blocking(move || db.write_opt(batch, &options)).await?;
        written?;
        #[cfg(feature = "failpoints")]
        fail::fail_point!("consumer.after_host_write");
        let commit = shard.commit_written(prepared)?;
        Ok(commit.variables.map(|v| v.flow_run_id))
    }
}

/// A future opening a shard, for [`Driver::Local`].
pub type OpenShard = std::pin::Pin<
    Box<
        dyn Future<
                Output = Result<(Shard, triggers_runtime::Recovery), triggers_runtime::ShardError>,
            > + Send,
    >,
>;

/// What a run did.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Summary {
    /// Offset the run resumed from.
    pub resumed_at: i64,
    /// Transactions committed by this run.
    pub transactions: u64,
    /// Of those, the ones whose trigger variables were persisted.
    pub with_triggers: u64,
    /// Whether recovery found trigger params of a committed transaction pending.
    pub recovered_pending: bool,
    /// Offset of the final checkpoint.
    pub final_offset: i64,
    /// The final checkpoint.
    pub checkpoint: Checkpoint,
}

impl Driver {
    async fn open(&mut self) -> anyhow::Result<(Checkpoint, bool)> {
        match self {
            Driver::Local { open, shard } => {
                if let Some(previous) = shard.take() {
                    // Requests in flight finish first: cut off, they would be sent again
                    // while the receiver may still be handling the first one.
                    previous
                        .close_within(triggers_runtime::DEFAULT_SHUTDOWN_GRACE)
                        .await;
                }
                let (opened, recovery) = open().await?;
                *shard = Some(Box::new(opened));
                Ok((recovery.checkpoint, recovery.pending.is_some()))
            }
            Driver::Sidecar(client) => {
                let opened = client
                    .open(OpenRequest {
                        state: Vec::new(),
                        ..Default::default()
                    })
                    .await?
                    .into_inner();
                Ok((
                    opened.checkpoint.unwrap_or_default(),
                    opened.triggers_pending,
                ))
            }
            Driver::SidecarState(state) => {
                let recovered = state.recovered()?;
                let opened = state
                    .client
                    .open(OpenRequest {
                        state: recovered,
                        ..Default::default()
                    })
                    .await?
                    .into_inner();
                let checkpoint = host_checkpoint(&state.db)?;
                Ok((checkpoint, opened.triggers_pending))
            }
            Driver::Host(host) => {
                if let Some(previous) = host.shard.take() {
                    previous
                        .close_within(triggers_runtime::DEFAULT_SHUTDOWN_GRACE)
                        .await;
                }
                let store =
                    Store::in_host_db(host.db.clone(), host.keyspace.clone(), host.durability)?;
                let (opened, recovery) = Shard::open_in(store, host.config.clone()).await?;
                host.shard = Some(opened);
                let checkpoint = host_checkpoint(&host.db)?;
                Ok((checkpoint, recovery.pending.is_some()))
            }
        }
    }

    async fn start_commit(
        &mut self,
        checkpoint: Checkpoint,
        stats: Vec<BindingStats>,
        started_at: std::time::SystemTime,
    ) -> anyhow::Result<Option<String>> {
        match self {
            Driver::Local { shard, .. } => {
                let shard = shard.as_mut().ok_or_else(|| anyhow::anyhow!("not open"))?;
                let commit = shard
                    .start_commit_at(checkpoint, &stats, started_at)
                    .await?;
                Ok(commit.variables.map(|v| v.flow_run_id))
            }
            Driver::Host(host) => host.start_commit(&checkpoint, &stats, started_at).await,
            Driver::Sidecar(client) => {
                let reply = client
                    .start_commit(start_commit_request(checkpoint, stats, started_at))
                    .await?
                    .into_inner();
                Ok(reply.triggers_persisted.then_some(reply.flow_run_id))
            }
            Driver::SidecarState(state) => {
                let request = start_commit_request(checkpoint.clone(), stats, started_at);
                let reply = state.client.start_commit(request).await?.into_inner();
                // The sidecar's writes, in the same batch as the consumer's checkpoint.
                #[cfg(feature = "failpoints")]
                fail::fail_point!("consumer.before_state_write");
                state.write(Some(&checkpoint), &reply.state_ops).await?;
                #[cfg(feature = "failpoints")]
                fail::fail_point!("consumer.after_state_write");
                Ok(reply.triggers_persisted.then_some(reply.flow_run_id))
            }
        }
    }

    async fn acknowledged(&mut self) -> anyhow::Result<()> {
        match self {
            Driver::Local { shard, .. } => {
                let shard = shard.as_mut().ok_or_else(|| anyhow::anyhow!("not open"))?;
                shard.acknowledged().await?;
                Ok(())
            }
            Driver::Host(host) => {
                host.shard()?.acknowledged().await?;
                Ok(())
            }
            Driver::Sidecar(client) => acknowledge_sidecar(client).await,
            Driver::SidecarState(state) => acknowledge_sidecar(&mut state.client).await,
        }
    }
}

/// Acknowledged through a sidecar, waiting for its outcome.
async fn acknowledge_sidecar(client: &mut crate::Client) -> anyhow::Result<()> {
    let outcome = client
        .acknowledged(AcknowledgedRequest {
            wait: true,
            ..Default::default()
        })
        .await?
        .into_inner()
        .outcome
        .unwrap_or_default();
    if outcome.ok {
        Ok(())
    } else {
        anyhow::bail!("{}", outcome.error)
    }
}

impl Driver {
    /// Closes an in-process shard (stopping its delivery workers and releasing its store);
    /// a sidecar keeps its shard.
    ///
    /// Cancel safety: as [`Shard::close_within`]; the driver has let go of its shard
    /// either way.
    pub async fn close(&mut self) {
        if let Driver::Local { shard, .. } = self
            && let Some(shard) = shard.take()
        {
            shard.close().await;
        }
        if let Driver::Host(host) = self
            && let Some(shard) = host.shard.take()
        {
            shard.close().await;
        }
    }

    /// Waits until every acknowledged webhook is delivered (decoupled delivery).
    async fn drained(&mut self) -> anyhow::Result<()> {
        match self {
            Driver::Local { shard, .. } => {
                let shard = shard.as_ref().ok_or_else(|| anyhow::anyhow!("not open"))?;
                shard.drained().await?;
                Ok(())
            }
            Driver::Host(host) => {
                host.shard()?.drained().await?;
                Ok(())
            }
            Driver::Sidecar(client) => {
                let reply = client
                    .await_drained(AwaitDrainedRequest::default())
                    .await?
                    .into_inner();
                if reply.ok {
                    Ok(())
                } else {
                    anyhow::bail!("{}", reply.error)
                }
            }
            Driver::SidecarState(state) => {
                let reply = state
                    .client
                    .await_drained(AwaitDrainedRequest::default())
                    .await?
                    .into_inner();
                state.write(None, &reply.state_ops).await?;
                if reply.ok {
                    Ok(())
                } else {
                    anyhow::bail!("{}", reply.error)
                }
            }
        }
    }
}

/// A StartCommit request for a sidecar: `started_at` as the wire's timestamp.
fn start_commit_request(
    checkpoint: Checkpoint,
    stats: Vec<BindingStats>,
    started_at: std::time::SystemTime,
) -> StartCommitRequest {
    let since = started_at
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    StartCommitRequest {
        checkpoint: Some(checkpoint),
        stats,
        started_at: Some(triggers_proto::Timestamp {
            seconds: i64::try_from(since.as_secs()).unwrap_or(i64::MAX),
            nanos: i32::try_from(since.subsec_nanos()).unwrap_or(0),
        }),
        ..Default::default()
    }
}

/// How a run proceeds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RunOptions {
    /// Documents per transaction (at least 1).
    pub docs_per_txn: usize,
    /// Stop after committing and acknowledging this many transactions.
    pub max_transactions: Option<u64>,
    /// Return right after the StartCommit of this transaction (1-based), without its
    /// Acknowledged: what a crash at that moment leaves behind. The demo uses it.
    pub stop_before_acknowledging: Option<u64>,
    /// Wait this long after each Acknowledged before the next transaction: a source that
    /// trickles, so webhooks spread over time (the receiver tests use it to cross token
    /// expiries). Zero runs transactions back to back.
    pub pause_between_transactions: std::time::Duration,
}

/// Runs the consumer: recover, acknowledge the recovered commit (delivering what a crash
/// left pending), then commit the remaining documents K at a time, acknowledging each,
/// and at the end of the input wait for the webhook backlog (decoupled delivery) to drain.
///
/// Cancel safety: as the shard call it was dropped in (see [`Shard`]'s methods): a
/// checkpoint is either committed or not, and the next run recovers from the store.
pub async fn run(
    driver: &mut Driver,
    documents: &[Document],
    options: RunOptions,
) -> anyhow::Result<Summary> {
    let RunOptions {
        docs_per_txn,
        max_transactions,
        stop_before_acknowledging,
        pause_between_transactions,
    } = options;
    anyhow::ensure!(docs_per_txn > 0, "transactions need at least one document");
    let (mut checkpoint, recovered_pending) = driver.open().await?;
    let resumed_at = checkpoint
        .sources
        .get(INPUT_JOURNAL)
        .map_or(0, |s| s.read_through);
    tracing::info!(resumed_at, recovered_pending, "recovered");
    driver.acknowledged().await?;
    if recovered_pending {
        tracing::info!("acknowledged the recovered commit; its pending webhooks are sent");
    }

    let remaining = documents.partition_point(|d| d.end_offset <= resumed_at);
    let mut summary = Summary {
        resumed_at,
        recovered_pending,
        final_offset: resumed_at,
        ..Summary::default()
    };
    for txn in documents[remaining..].chunks(docs_per_txn) {
        if max_transactions.is_some_and(|max| summary.transactions >= max) {
            break;
        }
        // The transaction starts as its first document is read: Flow's `run_id`.
        let started_at = std::time::SystemTime::now();
        let mut stats = TransactionStats::default();
        let mut producers: BTreeMap<[u8; 6], u64> = BTreeMap::new();
        for doc in txn {
            stats.add_document(doc.binding, doc.clock, doc.bytes);
            let last = producers.entry(doc.producer).or_default();
            *last = (*last).max(doc.clock.0);
        }
        let end = txn.last().map_or(summary.final_offset, |d| d.end_offset);
        advance(&mut checkpoint, end, &producers);

        let run_id = driver
            .start_commit(checkpoint.clone(), stats.take(), started_at)
            .await?;
        #[cfg(feature = "failpoints")]
        fail::fail_point!("consumer.after_start_commit");
        summary.transactions += 1;
        summary.with_triggers += u64::from(run_id.is_some());
        summary.final_offset = end;
        tracing::info!(
            transaction = summary.transactions,
            documents = txn.len(),
            offset = end,
            flow_run_id = run_id.as_deref().unwrap_or("-"),
            "committed"
        );
        if stop_before_acknowledging == Some(summary.transactions) {
            tracing::info!(
                transaction = summary.transactions,
                "stopping before Acknowledged"
            );
            break;
        }
        driver.acknowledged().await?;
        tracing::info!(transaction = summary.transactions, "acknowledged");
        if !pause_between_transactions.is_zero() {
            tokio::time::sleep(pause_between_transactions).await;
        }
    }
    if stop_before_acknowledging.is_none_or(|stop| summary.transactions < stop) {
        driver.drained().await?;
        tracing::info!("every acknowledged webhook is delivered");
    }
    summary.checkpoint = checkpoint;
    Ok(summary)
}

/// Moves the input's checkpoint to `offset` and records each producer's last clock.
fn advance(checkpoint: &mut Checkpoint, offset: i64, producers: &BTreeMap<[u8; 6], u64>) {
    let source = checkpoint
        .sources
        .entry(INPUT_JOURNAL.to_string())
        .or_default();
    source.read_through = offset;
    for (id, clock) in producers {
        match source.producers.iter_mut().find(|p| p.id == id) {
            Some(entry) => entry.last_ack = entry.last_ack.max(*clock),
            None => source.producers.push(ProducerEntry {
                id: id.to_vec(),
                last_ack: *clock,
                begin: -1,
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn documents_carry_offsets_bindings_and_clocks() {
        let bindings = vec!["a".to_string(), "b".to_string()];
        let text = "{\"_meta\":{\"uuid\":\"83fc2f95-cc5f-11e9-8000-010203040506\"},\"collection\":\"b\"}\n\n{\"_meta\":{\"uuid\":\"13814000-1dd2-11b2-8000-010000000000\"},\"collection\":\"a\"}\n";
        let docs = parse_documents(text, &bindings).expect("parses");
        assert_eq!(docs.len(), 2);
        assert_eq!(docs[0].binding, 1);
        assert_eq!(docs[0].end_offset, 75);
        assert_eq!(docs[0].producer, [1, 2, 3, 4, 5, 6]);
        assert_eq!(docs[1].end_offset, text.len() as i64);

        let err = parse_documents("{\"collection\":\"a\"}\n", &bindings).expect_err("no uuid");
        assert!(err.to_string().contains("line 1"), "{err}");
        let err = parse_documents(
            "{\"_meta\":{\"uuid\":\"9b2f7d1e-4c3a-4e8b-9f00-1234567890ab\"},\"collection\":\"a\"}\n",
            &bindings,
        )
        .expect_err("v4 uuid");
        assert!(err.to_string().contains("not a v1"), "{err}");
    }
}
