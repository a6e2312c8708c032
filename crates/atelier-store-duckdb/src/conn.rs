//! The connections of one DuckDB database: one writer, a pool of readers.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, LazyLock, Weak};
use std::time::{Duration, Instant};

use atelier_store::{NewSession, StoreError, StoreResult};
use duckdb::{Connection, DropBehavior, Transaction};
use parking_lot::Mutex;

use crate::batches::BatchThread;
use crate::sessions::{PendingSessions, WRITE_WITHIN};
use crate::{OpenError, OpenOptions, sql};

/// Idle reader connections kept for reuse; more are cloned on demand under load.
const MAX_IDLE_READERS: usize = 8;
/// Prepared statements the writer connection keeps.
const WRITER_STATEMENTS: usize = 64;
/// A write that took longer, waiting for the writer included, is logged: every
/// commit waits for the disk (an fsync of the write-ahead log) and every write
/// for the one before it, so a slow disk shows here first.
const SLOW_WRITE: Duration = Duration::from_millis(500);
/// DuckDB's own checkpoint threshold, as a multiple of the batch thread's
/// (ADR-0037): a backstop for a WAL that grows with no batch to follow.
const DUCKDB_CHECKPOINT_FACTOR: u64 = 4;

/// Files open in this process. DuckDB's file lock only keeps other processes out; a
/// second open in this one would run two database instances on one file.
static OPEN_FILES: LazyLock<Mutex<HashSet<PathBuf>>> = LazyLock::new(Default::default);

/// Holds a file's entry in [`OPEN_FILES`] until dropped.
struct OpenFile(Option<PathBuf>);

impl OpenFile {
    fn claim(path: &Path) -> Result<Self, OpenError> {
        if path == Path::new(":memory:") {
            return Ok(OpenFile(None));
        }
        // The file may not exist yet; its folder does by now.
        let key = match (path.parent(), path.file_name()) {
            (Some(parent), Some(name)) => std::fs::canonicalize(if parent.as_os_str().is_empty() {
                Path::new(".")
            } else {
                parent
            })
            .map(|p| p.join(name))
            .unwrap_or_else(|_| path.to_path_buf()),
            _ => path.to_path_buf(),
        };
        if !OPEN_FILES.lock().insert(key.clone()) {
            return Err(OpenError::AlreadyOpen {
                path: path.to_path_buf(),
            });
        }
        Ok(OpenFile(Some(key)))
    }
}

impl Drop for OpenFile {
    fn drop(&mut self) {
        if let Some(key) = self.0.take() {
            OPEN_FILES.lock().remove(&key);
        }
    }
}

#[derive(Clone)]
pub(crate) struct Connections {
    inner: Arc<Inner>,
}

struct Inner {
    path: PathBuf,
    /// The only connection that writes: taking this lock is what serialises writes.
    writer: Mutex<Connection>,
    /// Connections for reads; they see everything the writer has committed.
    readers: Mutex<Vec<Connection>>,
    /// Where new readers are cloned from, so that cloning never waits for a write.
    origin: Mutex<Connection>,
    /// New sessions not yet written: every operation on refresh tokens writes
    /// them first.
    sessions: PendingSessions,
    /// Writes the write-behind batches at idle priority (ADR-0034).
    batches: BatchThread,
    /// The size of the write-ahead log at which the batch thread checkpoints
    /// it (ADR-0037).
    checkpoint_at: u64,
    /// Declared last: released only after every connection above has closed.
    _claim: OpenFile,
}

impl Connections {
    /// Blocking: opens the file, which also takes DuckDB's exclusive file lock.
    pub(crate) fn open(path: &Path, options: OpenOptions) -> Result<Self, OpenError> {
        let in_memory = path == Path::new(":memory:");
        if let Some(parent) = path.parent().filter(|p| !in_memory && !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).map_err(|source| OpenError::CreateDir {
                path: parent.to_path_buf(),
                source,
            })?;
        }
        let claim = OpenFile::claim(path)?;
        let writer = config(options.checkpoint_wal_bytes)
            .and_then(|config| {
                if in_memory {
                    Connection::open_in_memory_with_flags(config)
                } else {
                    Connection::open_with_flags(path, config)
                }
            })
            .map_err(|source| {
                if is_lock_conflict(&source) {
                    OpenError::Locked {
                        path: path.to_path_buf(),
                    }
                } else {
                    OpenError::Open {
                        path: path.to_path_buf(),
                        source,
                    }
                }
            })?;
        // The writer runs every kind of write, each statement prepared once
        // (`prepare_cached`); the default cache holds 16.
        writer.set_prepared_statement_cache_capacity(WRITER_STATEMENTS);
        let origin = writer.try_clone().map_err(|source| OpenError::Open {
            path: path.to_path_buf(),
            source,
        })?;
        Ok(Connections {
            inner: Arc::new(Inner {
                path: path.to_path_buf(),
                writer: Mutex::new(writer),
                readers: Mutex::new(Vec::new()),
                origin: Mutex::new(origin),
                sessions: PendingSessions::default(),
                batches: BatchThread::start(options.idle_batches).map_err(OpenError::Thread)?,
                checkpoint_at: options.checkpoint_wal_bytes,
                _claim: claim,
            }),
        })
    }

    pub(crate) fn path(&self) -> &Path {
        &self.inner.path
    }

    /// Runs `f` on a reader connection, off the async workers.
    pub(crate) async fn read<T, F>(&self, f: F) -> StoreResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> StoreResult<T> + Send + 'static,
    {
        let inner = Arc::clone(&self.inner);
        blocking(move || {
            let conn = inner.take_reader()?;
            let result = f(&conn);
            inner.return_reader(conn);
            result
        })
        .await
    }

    /// Runs `f` in one transaction on the writer connection, off the async workers.
    /// The transaction commits when `f` returns `Ok` and rolls back otherwise.
    pub(crate) async fn write<T, F>(&self, f: F) -> StoreResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&Transaction<'_>) -> StoreResult<T> + Send + 'static,
    {
        let inner = Arc::clone(&self.inner);
        blocking(move || with_writer(&inner.writer, "request", |conn| transact(conn, f))).await
    }

    /// [`write`](Self::write) for the write-behind batches (usage records, audit
    /// events): on the batch thread, which runs only when no other thread
    /// wants its core (ADR-0034). Writes of requests that wait for them keep
    /// [`write`](Self::write): they may wait for a batch to let go of the writer.
    /// A batch that leaves the write-ahead log past its threshold is followed
    /// by a checkpoint on the same thread (ADR-0037).
    pub(crate) async fn write_batch<T, F>(&self, f: F) -> StoreResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&Transaction<'_>) -> StoreResult<T> + Send + 'static,
    {
        let inner = Arc::clone(&self.inner);
        self.inner
            .batches
            .run(move || {
                let written = with_writer(&inner.writer, "batch", |conn| transact(conn, f));
                inner.checkpoint_if_due();
                written
            })
            .await
            .map_err(StoreError::backend)?
    }

    /// [`write`](Self::write) for what reads or changes refresh tokens (or the
    /// users they belong to): the new sessions still waiting are written first,
    /// in a transaction of their own, so `f` finds them (ADR-0033).
    pub(crate) async fn write_after_sessions<T, F>(&self, f: F) -> StoreResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&Transaction<'_>) -> StoreResult<T> + Send + 'static,
    {
        let inner = Arc::clone(&self.inner);
        blocking(move || {
            with_writer(&inner.writer, "request", |conn| {
                inner.sessions.write(conn)?;
                transact(conn, f)
            })
        })
        .await
    }

    /// Keeps a new session to be written before the next operation on refresh
    /// tokens, or within [`WRITE_WITHIN`] (ADR-0033).
    pub(crate) fn keep_session(&self, session: NewSession) {
        if !self.inner.sessions.push(session) {
            return; // the timed write is arranged
        }
        // Holds the connections only weakly: a store dropped meanwhile has
        // written its sessions as it closed, and its file must be free at once.
        let inner = Arc::downgrade(&self.inner);
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(WRITE_WITHIN).await;
                let Some(inner) = Weak::upgrade(&inner) else {
                    return;
                };
                // A failure is logged, and the sessions kept for the next try.
                let _ = Connections {
                    inner: Arc::clone(&inner),
                }
                .write_sessions()
                .await;
                if !inner.sessions.still_waiting() {
                    return;
                }
            }
        });
    }

    /// Writes the new sessions still waiting: before reading refresh tokens.
    pub(crate) async fn write_sessions(&self) -> StoreResult<()> {
        let inner = Arc::clone(&self.inner);
        blocking(move || with_writer(&inner.writer, "sessions", |conn| inner.sessions.write(conn))).await
    }

    /// Writes everything to the database file, so the next start needs no WAL replay.
    pub(crate) async fn checkpoint(&self) -> StoreResult<()> {
        let inner = Arc::clone(&self.inner);
        blocking(move || {
            with_writer(&inner.writer, "checkpoint", |conn| {
                inner.sessions.write(conn)?;
                conn.execute_batch("CHECKPOINT").map_err(sql::err)
            })
        })
        .await
    }
}

/// Runs `f` on the writer connection, and logs a write slower than
/// [`SLOW_WRITE`] with how long it waited for the writer, how long it ran,
/// and how much of that this thread spent on a core: a run far longer than
/// its CPU time waited for the disk or for a core, one as long did the work.
fn with_writer<T>(
    writer: &Mutex<Connection>,
    kind: &'static str,
    f: impl FnOnce(&mut Connection) -> StoreResult<T>,
) -> StoreResult<T> {
    let asked = Instant::now();
    let mut conn = writer.lock();
    let waited = asked.elapsed();
    let cpu_before = thread_cpu_time();
    let result = f(&mut conn);
    drop(conn);
    let took = asked.elapsed();
    if took >= SLOW_WRITE {
        let ms = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        let cpu = thread_cpu_time()
            .zip(cpu_before)
            .map(|(after, before)| ms(after.saturating_sub(before)));
        tracing::warn!(
            kind,
            waited_ms = ms(waited),
            ran_ms = ms(took - waited),
            cpu_ms = cpu,
            "a database write was slow (the disk's commits, or the writer busy)"
        );
    }
    result
}

/// The CPU time this thread has used (a system call, about a microsecond; a
/// write's commit takes milliseconds).
fn thread_cpu_time() -> Option<Duration> {
    nix::time::clock_gettime(nix::time::ClockId::CLOCK_THREAD_CPUTIME_ID)
        .ok()
        .map(Duration::from)
}

/// Runs `f` in one transaction on `conn`: committed when `f` returns `Ok`,
/// rolled back otherwise.
pub(crate) fn transact<T>(
    conn: &mut Connection,
    f: impl FnOnce(&Transaction<'_>) -> StoreResult<T>,
) -> StoreResult<T> {
    let mut tx = conn.transaction().map_err(sql::err)?;
    // Dropped on an error from `f`, the transaction rolls back.
    let value = f(&tx)?;
    // The crate's `commit` also runs its drop behaviour afterwards: a
    // ROLLBACK with no transaction open, which DuckDB parses, plans and
    // refuses with an exception, ignored, after every write: a quarter
    // of a write's own statements, about 0.5 M instructions (counted
    // with `bench/callgrind --logins`). So the rollback is ours to
    // make, where a commit fails.
    tx.set_drop_behavior(DropBehavior::Ignore);
    if let Err(e) = tx.commit() {
        let _ = conn.execute_batch("ROLLBACK");
        return Err(sql::err(e));
    }
    Ok(value)
}

impl Drop for Inner {
    /// A store dropped without `close` still writes the sessions it answered
    /// for (the connections close after this).
    fn drop(&mut self) {
        let _ = self.sessions.write(self.writer.get_mut());
    }
}

impl Inner {
    /// Writes the write-ahead log into the database file once it has grown
    /// past `checkpoint_at`. Called on the batch thread after a batch: DuckDB
    /// would otherwise run the checkpoint inside whichever commit crossed its
    /// threshold, a studio turn's or a login's as often as a batch's, tens to
    /// hundreds of milliseconds at normal priority (ADR-0037). A failure is
    /// logged; the next batch tries again.
    fn checkpoint_if_due(&self) {
        // In memory there is no log file, and the size reads as 0.
        let size = std::fs::metadata(wal_path(&self.path)).map_or(0, |m| m.len());
        if size < self.checkpoint_at {
            return;
        }
        let done = with_writer(&self.writer, "checkpoint", |conn| {
            conn.execute_batch("CHECKPOINT").map_err(sql::err)
        });
        if let Err(e) = done {
            tracing::warn!(error = %e, wal_bytes = size, "cannot checkpoint the database after a batch");
        }
    }

    fn take_reader(&self) -> StoreResult<Connection> {
        if let Some(conn) = self.readers.lock().pop() {
            return Ok(conn);
        }
        self.origin.lock().try_clone().map_err(sql::err)
    }

    fn return_reader(&self, conn: Connection) {
        let mut idle = self.readers.lock();
        if idle.len() < MAX_IDLE_READERS {
            idle.push(conn);
        }
    }
}

/// How DuckDB runs: one thread per query. atelier's queries are small (a row, a
/// page, a batch of usage records); with a worker pool DuckDB hands their tasks
/// to its own threads while the calling thread spins, polling for the result:
/// measured with callgrind, that spinning was most of the store's CPU and stole a
/// core from the requests being served (ADR-0019). Queries still run side by side,
/// each on the connection's own thread.
/// `checkpoint_at`: the batch thread's checkpoint threshold; DuckDB's own is
/// set [`DUCKDB_CHECKPOINT_FACTOR`] times higher (ADR-0037).
fn config(checkpoint_at: u64) -> duckdb::Result<duckdb::Config> {
    let duckdb_threshold = checkpoint_at.saturating_mul(DUCKDB_CHECKPOINT_FACTOR);
    duckdb::Config::default()
        .threads(1)?
        .with("checkpoint_threshold", format!("{duckdb_threshold}b"))
}

/// Where DuckDB keeps a database file's write-ahead log.
fn wal_path(path: &Path) -> PathBuf {
    let mut wal = path.as_os_str().to_owned();
    wal.push(".wal");
    PathBuf::from(wal)
}

async fn blocking<T, F>(f: F) -> StoreResult<T>
where
    T: Send + 'static,
    F: FnOnce() -> StoreResult<T> + Send + 'static,
{
    tokio::task::spawn_blocking(f)
        .await
        .map_err(StoreError::backend)?
}

/// DuckDB reports another process holding the file as an IO error about its lock.
fn is_lock_conflict(err: &duckdb::Error) -> bool {
    let text = err.to_string();
    text.contains("Could not set lock") || text.contains("Conflicting lock")
}

#[cfg(test)]
mod tests {
    use thread_priority::unix::{NormalThreadSchedulePolicy, ThreadSchedulePolicy};

    use super::*;

    fn count(conns: &Connections) -> i64 {
        conns
            .inner
            .writer
            .lock()
            .query_row("SELECT count(*) FROM t", [], |r| r.get(0))
            .expect("count")
    }

    #[tokio::test]
    async fn a_failed_or_panicking_write_leaves_nothing_and_the_next_one_works() {
        let conns = Connections::open(Path::new(":memory:"), OpenOptions::default()).expect("open");
        conns
            .write(|c| sql::execute(c, "CREATE TABLE t (x INTEGER)", []))
            .await
            .expect("create");

        let failed = conns
            .write(|c| {
                sql::execute(c, "INSERT INTO t VALUES (1)", [])?;
                Err::<(), _>(StoreError::NotFound)
            })
            .await;
        assert!(matches!(failed, Err(StoreError::NotFound)), "{failed:?}");
        assert_eq!(count(&conns), 0, "the failed write's row was rolled back");

        let panicked = conns
            .write(|c| -> StoreResult<()> {
                sql::execute(c, "INSERT INTO t VALUES (2)", [])?;
                panic!("a bug in the middle of a write");
            })
            .await;
        assert!(panicked.is_err());
        assert_eq!(count(&conns), 0, "the panicking write's row was rolled back");

        conns
            .write(|c| sql::execute(c, "INSERT INTO t VALUES (3)", []))
            .await
            .expect("a write after both");
        assert_eq!(count(&conns), 1);
    }

    /// What a log subscriber wrote, shared with the test.
    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Captured {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0.lock().extend_from_slice(bytes);
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_slow_write_is_logged_with_its_wait_for_the_writer_and_a_quick_one_is_not() {
        let writer = Arc::new(Mutex::new(Connection::open_in_memory().expect("open")));
        let captured = Captured::default();
        let sink = captured.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || sink.clone())
            .with_ansi(false)
            .finish();
        tracing::subscriber::with_default(subscriber, || {
            with_writer(&writer, "request", |c| {
                c.execute_batch("SELECT 1").map_err(sql::err)
            })
            .expect("quick");
            assert!(captured.0.lock().is_empty(), "a quick write logged nothing");

            // Another thread holds the writer for 300 ms; this write runs 300 ms more.
            let held = Arc::clone(&writer);
            let (taken, take) = std::sync::mpsc::channel();
            let holder = std::thread::spawn(move || {
                let _conn = held.lock();
                taken.send(()).expect("send");
                std::thread::sleep(Duration::from_millis(300));
            });
            take.recv().expect("the writer was taken");
            with_writer(&writer, "batch", |_| {
                std::thread::sleep(Duration::from_millis(300));
                Ok(())
            })
            .expect("slow");
            holder.join().expect("holder");
        });
        let log = String::from_utf8(captured.0.lock().clone()).expect("utf-8");
        assert!(log.contains("a database write was slow"), "{log}");
        assert!(log.contains("kind=\"batch\""), "{log}");
        let field = |name: &str| -> u64 {
            let at = log.find(&format!("{name}=")).expect(name) + name.len() + 1;
            log[at..]
                .split(|c: char| !c.is_ascii_digit())
                .next()
                .unwrap()
                .parse()
                .expect("a number")
        };
        assert!((250..2_000).contains(&field("waited_ms")), "{log}");
        assert!((250..2_000).contains(&field("ran_ms")), "{log}");
        // It slept: the run was not on a core.
        assert!(field("cpu_ms") < 100, "{log}");
    }

    /// The scheduling policy of the thread that calls it.
    fn policy() -> StoreResult<ThreadSchedulePolicy> {
        thread_priority::unix::thread_schedule_policy().map_err(|e| StoreError::backend(format!("{e:?}")))
    }

    #[tokio::test]
    async fn batches_are_written_at_idle_priority_and_a_panicking_one_stops_nothing() {
        let conns = Connections::open(Path::new(":memory:"), OpenOptions::default()).expect("open");
        let (policy, thread) = conns
            .write_batch(|c| {
                sql::execute(c, "CREATE TABLE t (x INTEGER)", [])?;
                sql::execute(c, "INSERT INTO t VALUES (1)", [])?;
                Ok((policy()?, std::thread::current().name().map(str::to_owned)))
            })
            .await
            .expect("a batch");
        assert_eq!(
            policy,
            ThreadSchedulePolicy::Normal(NormalThreadSchedulePolicy::Idle)
        );
        assert_eq!(thread.as_deref(), Some("atelier-batches"));
        assert_eq!(count(&conns), 1);

        let panicked = conns
            .write_batch(|c| -> StoreResult<()> {
                sql::execute(c, "INSERT INTO t VALUES (2)", [])?;
                panic!("a bug in the middle of a batch");
            })
            .await;
        assert!(panicked.is_err());
        assert_eq!(count(&conns), 1, "the panicking batch's row was rolled back");
        conns
            .write_batch(|c| sql::execute(c, "INSERT INTO t VALUES (3)", []))
            .await
            .expect("a batch after it");
        assert_eq!(count(&conns), 2);
    }

    #[tokio::test]
    async fn batches_keep_normal_priority_when_asked_to() {
        let conns = Connections::open(
            Path::new(":memory:"),
            OpenOptions {
                idle_batches: false,
                ..OpenOptions::default()
            },
        )
        .expect("open");
        let policy = conns.write_batch(|_| policy()).await.expect("a batch");
        assert_eq!(
            policy,
            ThreadSchedulePolicy::Normal(NormalThreadSchedulePolicy::Other)
        );
    }

    /// ADR-0037: a request's write leaves the grown log alone (DuckDB's own
    /// threshold is four times the batch thread's), the next batch checkpoints
    /// it, and nothing written is lost, before or after reopening the file.
    #[tokio::test]
    async fn the_batch_thread_checkpoints_a_grown_log_and_a_request_write_does_not() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("atelier.duckdb");
        let options = OpenOptions {
            checkpoint_wal_bytes: 64 << 10,
            ..OpenOptions::default()
        };
        let conns = Connections::open(&path, options).expect("open");
        conns
            .write(|c| sql::execute(c, "CREATE TABLE t (x VARCHAR)", []))
            .await
            .expect("create");
        let wal = wal_path(&path);
        let log_bytes = || std::fs::metadata(&wal).map_or(0, |m| m.len());
        let mut writes = 0;
        while log_bytes() < 96 << 10 && writes < 100 {
            conns
                .write(|c| sql::execute(c, "INSERT INTO t SELECT repeat('x', 1000) FROM range(10)", []))
                .await
                .expect("a request's write");
            writes += 1;
        }
        let grown = log_bytes();
        assert!(
            (96 << 10..256 << 10).contains(&grown),
            "{writes} request writes left the log at {grown} bytes, past the batch thread's threshold and under DuckDB's"
        );

        conns
            .write_batch(|c| sql::execute(c, "INSERT INTO t VALUES ('batch')", []))
            .await
            .expect("a batch");
        assert!(
            log_bytes() < 4 << 10,
            "the batch was followed by a checkpoint: {} bytes of {grown} left in the log",
            log_bytes()
        );
        let rows = writes * 10 + 1;
        assert_eq!(count(&conns), rows);
        drop(conns);
        let reopened = Connections::open(&path, options).expect("reopen");
        assert_eq!(count(&reopened), rows, "every row is in the file");
    }
}
