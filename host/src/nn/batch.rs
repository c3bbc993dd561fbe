//! A model's queue: every `compute` on a model waits here for its turn.
//!
//! One task per model takes waiting requests when a run slot is free and,
//! where the model's inputs all have an open first dimension, joins requests
//! of the same shape into one batch along it (up to `max_batch` rows,
//! waiting at most `max_wait` for more), runs it off the executor, and hands
//! each caller back exactly its own rows. Functions take turns: the batch is
//! filled round-robin across the functions that have requests waiting, so one
//! busy function cannot starve the rest.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::{Semaphore, mpsc, oneshot};

use super::{Graph, NnError, Tensor, micros};

/// How a model's queue forms and runs batches (`[model.<name>]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BatchConfig {
    /// Most rows in one run; 1 turns batching off.
    pub max_batch: usize,
    /// How long the oldest waiting request waits for others to join its batch.
    /// Zero batches only what is already waiting when a run slot frees up.
    pub max_wait: Duration,
    /// Most requests waiting; past it `compute` fails at once.
    pub max_queue: usize,
    /// Runs of this model at once.
    pub parallelism: usize,
    /// While the model's mean run takes at most this long, runs skip the
    /// hand-off to the blocking pool: a call that finds nothing queued and a
    /// slot free runs at once on the calling thread, and queued batches run
    /// on the queue's task. Zero always hands runs to the blocking pool.
    pub inline_max: Duration,
}

impl Default for BatchConfig {
    fn default() -> Self {
        Self {
            max_batch: 32,
            max_wait: Duration::ZERO,
            max_queue: 1024,
            parallelism: std::thread::available_parallelism().map_or(1, |n| n.get()),
            inline_max: Duration::from_micros(200),
        }
    }
}

/// What a model's queue has done.
#[derive(Debug, Default)]
pub struct ModelStats {
    requests: AtomicU64,
    batches: AtomicU64,
    rows: AtomicU64,
    failed: AtomicU64,
    rejected: AtomicU64,
    busy_us: AtomicU64,
}

impl ModelStats {
    /// Whether the model's runs so far took `limit` or less on average.
    fn runs_within(&self, limit: Duration) -> bool {
        let runs = self.batches();
        !limit.is_zero() && runs > 0 && self.busy_us() / runs <= micros(limit)
    }

    /// Counts one run of `requests` requests and `rows` rows begun at `started`.
    fn record(&self, started: Instant, requests: usize, rows: usize, failed: usize) {
        self.busy_us
            .fetch_add(micros(started.elapsed()), Ordering::Relaxed);
        self.batches.fetch_add(1, Ordering::Relaxed);
        self.requests.fetch_add(requests as u64, Ordering::Relaxed);
        self.rows.fetch_add(rows as u64, Ordering::Relaxed);
        self.failed.fetch_add(failed as u64, Ordering::Relaxed);
    }

    /// Requests answered (each `compute` is one).
    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }
    /// Runs of the model; fewer than `requests` when batching joined some.
    pub fn batches(&self) -> u64 {
        self.batches.load(Ordering::Relaxed)
    }
    /// Rows (samples) run.
    pub fn rows(&self) -> u64 {
        self.rows.load(Ordering::Relaxed)
    }
    /// Requests whose run failed.
    pub fn failed(&self) -> u64 {
        self.failed.load(Ordering::Relaxed)
    }
    /// Requests refused because the queue was full.
    pub fn rejected(&self) -> u64 {
        self.rejected.load(Ordering::Relaxed)
    }
    /// Time spent running the model, in microseconds.
    pub fn busy_us(&self) -> u64 {
        self.busy_us.load(Ordering::Relaxed)
    }
}

struct Job {
    function: Arc<str>,
    inputs: Vec<Tensor>,
    rows: usize,
    reply: oneshot::Sender<Result<Vec<Tensor>, NnError>>,
}

impl Job {
    /// Whether `other` can share a batch with this job: same inputs but for
    /// the number of rows.
    fn joins(&self, other: &Job) -> bool {
        self.inputs.len() == other.inputs.len()
            && self.inputs.iter().zip(&other.inputs).all(|(a, b)| {
                a.ty == b.ty && a.dims.len() == b.dims.len() && a.dims.get(1..) == b.dims.get(1..)
            })
    }
}

/// The sending side of a model's queue.
#[derive(Debug)]
pub(crate) struct Queue {
    model: String,
    graph: Arc<dyn Graph>,
    tx: mpsc::Sender<Job>,
    stats: Arc<ModelStats>,
    max_queue: usize,
    /// Run slots, shared with the queue's task.
    slots: Arc<Semaphore>,
    /// Requests sent to the task and not yet taken into a batch.
    queued: Arc<AtomicUsize>,
    inline_max: Duration,
}

impl Queue {
    /// Starts the queue's task on the current tokio runtime.
    pub(crate) fn start(model: &str, graph: Arc<dyn Graph>, config: BatchConfig) -> Self {
        let max_queue = config.max_queue.max(1);
        let (tx, rx) = mpsc::channel(max_queue);
        let stats = Arc::new(ModelStats::default());
        let batchable = config.max_batch > 1
            && graph
                .inputs()
                .iter()
                .all(|i| i.dims.first().is_some_and(Option::is_none));
        let slots = Arc::new(Semaphore::new(config.parallelism.max(1)));
        let queued = Arc::new(AtomicUsize::new(0));
        let inline_max = config.inline_max;
        tokio::spawn(serve(
            graph.clone(),
            config,
            batchable,
            rx,
            Shared {
                stats: stats.clone(),
                slots: slots.clone(),
                queued: queued.clone(),
            },
        ));
        Self {
            model: model.to_owned(),
            graph,
            tx,
            stats,
            max_queue,
            slots,
            queued,
            inline_max,
        }
    }

    /// Runs `inputs` on the calling thread, if nothing is queued, a slot is
    /// free and the model's runs are short; gives them back otherwise.
    fn run_inline(&self, inputs: Vec<Tensor>) -> Result<Result<Vec<Tensor>, NnError>, Vec<Tensor>> {
        if !self.stats.runs_within(self.inline_max) || self.queued.load(Ordering::Acquire) > 0 {
            return Err(inputs);
        }
        let Ok(_slot) = self.slots.try_acquire() else {
            return Err(inputs);
        };
        let rows = inputs.first().map_or(1, Tensor::rows);
        let started = Instant::now();
        let graph = self.graph.as_ref();
        // A backend panic must not take the caller's worker thread with it.
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| graph.run(inputs)))
            .unwrap_or_else(|_| Err(NnError::runtime(format!("model `{}` panicked", self.model))));
        self.stats
            .record(started, 1, rows, usize::from(result.is_err()));
        Ok(result)
    }

    pub(crate) fn stats(&self) -> &ModelStats {
        &self.stats
    }

    /// Queues one request and waits for its outputs.
    pub(crate) async fn submit(
        &self,
        function: &Arc<str>,
        inputs: Vec<Tensor>,
    ) -> Result<Vec<Tensor>, NnError> {
        let inputs = match self.run_inline(inputs) {
            Ok(result) => return result,
            Err(inputs) => inputs,
        };
        let (reply, answer) = oneshot::channel();
        let job = Job {
            function: function.clone(),
            rows: inputs.first().map_or(1, Tensor::rows),
            inputs,
            reply,
        };
        self.queued.fetch_add(1, Ordering::AcqRel);
        let sent = self.tx.try_send(job);
        if sent.is_err() {
            self.queued.fetch_sub(1, Ordering::AcqRel);
        }
        match sent {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(_)) => {
                self.stats.rejected.fetch_add(1, Ordering::Relaxed);
                return Err(NnError::runtime(format!(
                    "model `{}` has {} inferences waiting already; try again later",
                    self.model, self.max_queue
                )));
            }
            Err(mpsc::error::TrySendError::Closed(_)) => {
                return Err(NnError::runtime(format!(
                    "model `{}` is shutting down",
                    self.model
                )));
            }
        }
        answer.await.map_err(|_| {
            NnError::runtime(format!(
                "model `{}` dropped the inference (its run panicked)",
                self.model
            ))
        })?
    }
}

/// Waiting jobs, one line per function, served in turn.
#[derive(Default)]
struct Waiting {
    lines: VecDeque<(Arc<str>, VecDeque<Job>)>,
    /// When the oldest waiting job arrived.
    oldest: Option<Instant>,
    rows: usize,
    jobs: usize,
}

impl Waiting {
    fn push(&mut self, job: Job) {
        self.oldest.get_or_insert_with(Instant::now);
        self.rows += job.rows;
        self.jobs += 1;
        match self.lines.iter_mut().find(|(f, _)| *f == job.function) {
            Some((_, line)) => line.push_back(job),
            None => self
                .lines
                .push_back((job.function.clone(), VecDeque::from([job]))),
        }
    }

    fn is_empty(&self) -> bool {
        self.lines.is_empty()
    }

    /// Takes the next batch: one job from each function in turn while they
    /// fit. A function whose next job does not fit goes first next time.
    fn take_batch(&mut self, max_batch: usize, batchable: bool) -> Vec<Job> {
        let mut batch: Vec<Job> = Vec::new();
        let mut rows = 0;
        while let Some((function, mut line)) = self.lines.pop_front() {
            let Some(job) = line.pop_front() else {
                continue;
            };
            if job.reply.is_closed() {
                // Its caller gave up (timeout, cancelled invocation).
                self.rows -= job.rows;
                self.jobs -= 1;
                if !line.is_empty() {
                    self.lines.push_front((function, line));
                }
                continue;
            }
            let fits = batch.is_empty()
                || batchable && rows + job.rows <= max_batch && batch[0].joins(&job);
            if !fits {
                line.push_front(job);
                self.lines.push_front((function, line));
                break;
            }
            rows += job.rows;
            self.rows -= job.rows;
            self.jobs -= 1;
            batch.push(job);
            if !line.is_empty() {
                self.lines.push_back((function, line));
            }
            if !batchable || rows >= max_batch {
                break;
            }
        }
        self.oldest = (!self.lines.is_empty()).then(Instant::now);
        batch
    }
}

/// What a queue's task shares with its senders.
struct Shared {
    stats: Arc<ModelStats>,
    slots: Arc<Semaphore>,
    queued: Arc<AtomicUsize>,
}

async fn serve(
    graph: Arc<dyn Graph>,
    config: BatchConfig,
    batchable: bool,
    mut rx: mpsc::Receiver<Job>,
    shared: Shared,
) {
    let mut waiting = Waiting::default();
    loop {
        if waiting.is_empty() {
            match rx.recv().await {
                Some(job) => waiting.push(job),
                None => return,
            }
        }
        let Ok(slot) = shared.slots.clone().acquire_owned().await else {
            return;
        };
        while let Ok(job) = rx.try_recv() {
            waiting.push(job);
        }
        if batchable && !config.max_wait.is_zero() {
            let deadline = waiting.oldest.unwrap_or_else(Instant::now) + config.max_wait;
            while waiting.rows < config.max_batch {
                match tokio::time::timeout_at(deadline.into(), rx.recv()).await {
                    Ok(Some(job)) => waiting.push(job),
                    Ok(None) | Err(_) => break,
                }
            }
        }
        let before = waiting.jobs;
        let batch = waiting.take_batch(config.max_batch, batchable);
        shared
            .queued
            .fetch_sub(before - waiting.jobs, Ordering::AcqRel);
        if batch.is_empty() {
            continue;
        }
        if shared.stats.runs_within(config.inline_max) {
            // Short runs cost less here than the hand-off to the blocking
            // pool; meanwhile new requests gather for the next batch. A
            // panic drops the batch's replies (its callers get an error),
            // not this task.
            let graph = graph.as_ref();
            let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                run_batch(graph, batch, &shared.stats);
            }));
            drop(slot);
            continue;
        }
        let graph = graph.clone();
        let stats = shared.stats.clone();
        tokio::task::spawn_blocking(move || {
            let _slot = slot;
            run_batch(graph.as_ref(), batch, &stats);
        });
    }
}

/// Runs `batch` as one inference and answers each job with its own rows.
fn run_batch(graph: &dyn Graph, batch: Vec<Job>, stats: &ModelStats) {
    let started = Instant::now();
    let rows: usize = batch.iter().map(|j| j.rows).sum();
    let count = batch.len();
    let answers = if batch.len() == 1 {
        batch
            .into_iter()
            .map(|job| {
                let result = graph.run(job.inputs);
                (job.reply, result)
            })
            .collect::<Vec<_>>()
    } else {
        run_joined(graph, batch, rows)
    };
    let failed = answers.iter().filter(|(_, r)| r.is_err()).count();
    stats.record(started, count, rows, failed);
    for (reply, result) in answers {
        // A caller that gave up meanwhile is no loss.
        let _ = reply.send(result);
    }
}

type Answer = (
    oneshot::Sender<Result<Vec<Tensor>, NnError>>,
    Result<Vec<Tensor>, NnError>,
);

fn run_joined(graph: &dyn Graph, batch: Vec<Job>, rows: usize) -> Vec<Answer> {
    let mut replies = Vec::with_capacity(batch.len());
    let mut row_counts = Vec::with_capacity(batch.len());
    // Every job has the same inputs (`Job::joins`): the first sets each
    // input's shape, the rest append their rows.
    let mut joined: Vec<Tensor> = Vec::new();
    for job in batch {
        for (ix, input) in job.inputs.into_iter().enumerate() {
            match joined.get_mut(ix) {
                Some(tensor) => tensor.data.extend_from_slice(&input.data),
                None => {
                    let mut tensor = input;
                    if let Some(first) = tensor.dims.first_mut() {
                        *first = u32::try_from(rows).unwrap_or(u32::MAX);
                    }
                    joined.push(tensor);
                }
            }
        }
        replies.push(job.reply);
        row_counts.push(job.rows);
    }
    let result = joined
        .into_iter()
        .map(|t| Tensor::new(t.dims, t.ty, t.data))
        .collect::<Result<Vec<_>, _>>()
        .and_then(|inputs| graph.run(inputs))
        .and_then(|outputs| split(outputs, rows, &row_counts));
    match result {
        Ok(per_job) => replies
            .into_iter()
            .zip(per_job.into_iter().map(Ok))
            .collect(),
        Err(e) => replies.into_iter().map(|r| (r, Err(e.clone()))).collect(),
    }
}

/// Splits each output along its first dimension into each job's rows.
fn split(
    outputs: Vec<Tensor>,
    rows: usize,
    row_counts: &[usize],
) -> Result<Vec<Vec<Tensor>>, NnError> {
    let mut per_job: Vec<Vec<Tensor>> = row_counts.iter().map(|_| Vec::new()).collect();
    for output in outputs {
        if output.dims.first().map(|d| *d as usize) != Some(rows) {
            return Err(NnError::runtime(format!(
                "the model's output has dimensions {:?}, not {rows} rows like its batched input: \
                 set max_batch = 1 for this model",
                output.dims
            )));
        }
        let row_bytes = output.data.len() / rows.max(1);
        let mut offset = 0;
        for (job, count) in per_job.iter_mut().zip(row_counts) {
            let len = row_bytes * count;
            let data = output
                .data
                .get(offset..offset + len)
                .map(<[u8]>::to_vec)
                .ok_or_else(|| NnError::runtime("the model's output is shorter than its shape"))?;
            offset += len;
            let mut dims = output.dims.clone();
            if let Some(first) = dims.first_mut() {
                *first = u32::try_from(*count).unwrap_or(u32::MAX);
            }
            job.push(Tensor::new(dims, output.ty, data)?);
        }
    }
    Ok(per_job)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nn::{ElementType, InputSpec};

    /// Doubles its input row by row, and records the batch sizes it saw.
    #[derive(Debug)]
    struct Doubler {
        inputs: Vec<InputSpec>,
        outputs: Vec<String>,
        seen: std::sync::Mutex<Vec<u32>>,
    }

    impl Doubler {
        fn new() -> Arc<Self> {
            Arc::new(Self {
                inputs: vec![InputSpec {
                    name: "x".into(),
                    ty: ElementType::F32,
                    dims: vec![None, Some(2)],
                }],
                outputs: vec!["y".into()],
                seen: std::sync::Mutex::new(Vec::new()),
            })
        }
    }

    impl Graph for Doubler {
        fn inputs(&self) -> &[InputSpec] {
            &self.inputs
        }
        fn outputs(&self) -> &[String] {
            &self.outputs
        }
        fn run(&self, inputs: Vec<Tensor>) -> Result<Vec<Tensor>, NnError> {
            let input = inputs
                .into_iter()
                .next()
                .ok_or_else(|| NnError::invalid("none"))?;
            if let Ok(mut seen) = self.seen.lock() {
                seen.push(input.dims[0]);
            }
            // Slow enough that concurrent callers pile up behind it.
            std::thread::sleep(Duration::from_millis(2));
            let doubled: Vec<f32> = input
                .to_f32()
                .unwrap_or_default()
                .iter()
                .map(|v| v * 2.0)
                .collect();
            Ok(vec![Tensor::from_f32(input.dims.clone(), &doubled)?])
        }
        fn device(&self) -> &'static str {
            "cpu"
        }
    }

    fn job_inputs(value: f32, rows: u32) -> Vec<Tensor> {
        let values: Vec<f32> = (0..rows * 2).map(|i| value + i as f32).collect();
        Tensor::from_f32(vec![rows, 2], &values)
            .into_iter()
            .collect()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn batched_callers_each_get_back_exactly_their_own_rows() -> Result<(), NnError> {
        let graph = Doubler::new();
        let queue = Arc::new(Queue::start(
            "doubler",
            graph.clone(),
            BatchConfig {
                max_batch: 16,
                max_wait: Duration::from_millis(5),
                max_queue: 1024,
                parallelism: 1,
                ..BatchConfig::default()
            },
        ));
        let mut tasks = Vec::new();
        for caller in 0..64u32 {
            let queue = queue.clone();
            tasks.push(tokio::spawn(async move {
                let function: Arc<str> = Arc::from(format!("f{}", caller % 3));
                let rows = 1 + caller % 3;
                let base = caller as f32 * 100.0;
                let out = queue.submit(&function, job_inputs(base, rows)).await?;
                Ok::<_, NnError>((base, rows, out))
            }));
        }
        for task in tasks {
            let (base, rows, out) = task.await.map_err(|e| NnError::runtime(e.to_string()))??;
            let expected: Vec<f32> = (0..rows * 2).map(|i| (base + i as f32) * 2.0).collect();
            assert_eq!(out.len(), 1);
            assert_eq!(out[0].dims(), &[rows, 2]);
            assert_eq!(out[0].to_f32(), Some(expected), "caller at {base}");
        }
        let seen = graph.seen.lock().map(|s| s.clone()).unwrap_or_default();
        assert!(seen.iter().all(|rows| *rows <= 16), "{seen:?}");
        assert!(seen.len() < 64, "no batch was formed: {seen:?}");
        assert_eq!(queue.stats().requests(), 64);
        assert_eq!(queue.stats().batches(), seen.len() as u64);
        Ok(())
    }

    #[tokio::test]
    async fn a_full_queue_refuses_at_once_and_counts_the_refusal() {
        let graph = Doubler::new();
        let queue = Arc::new(Queue::start(
            "doubler",
            graph,
            BatchConfig {
                max_batch: 1,
                max_wait: Duration::ZERO,
                max_queue: 1,
                parallelism: 1,
                inline_max: Duration::ZERO,
            },
        ));
        let f: Arc<str> = Arc::from("f");
        let results = futures_join(&queue, &f, 8).await;
        let refused = results.iter().filter(|r| r.is_err()).count();
        assert!(refused > 0);
        assert!(
            results
                .iter()
                .filter_map(|r| r.as_ref().err())
                .all(|e| e.message.contains("waiting already"))
        );
        assert_eq!(queue.stats().rejected(), refused as u64);
    }

    async fn futures_join(
        queue: &Arc<Queue>,
        f: &Arc<str>,
        n: usize,
    ) -> Vec<Result<Vec<Tensor>, NnError>> {
        let mut set = tokio::task::JoinSet::new();
        for i in 0..n {
            let (queue, f) = (queue.clone(), f.clone());
            set.spawn(async move { queue.submit(&f, job_inputs(i as f32, 1)).await });
        }
        let mut out = Vec::new();
        while let Some(r) = set.join_next().await {
            out.push(r.unwrap_or_else(|e| Err(NnError::runtime(e.to_string()))));
        }
        out
    }

    #[test]
    fn a_busy_function_does_not_fill_the_batch_before_others_get_a_turn() {
        let mut waiting = Waiting::default();
        let mut keep = Vec::new();
        let mut push = |waiting: &mut Waiting, f: &str| {
            let (reply, rx) = oneshot::channel();
            keep.push(rx);
            waiting.push(Job {
                function: Arc::from(f),
                inputs: job_inputs(0.0, 1),
                rows: 1,
                reply,
            });
        };
        for _ in 0..10 {
            push(&mut waiting, "busy");
        }
        push(&mut waiting, "quiet");
        let batch = waiting.take_batch(4, true);
        let functions: Vec<&str> = batch.iter().map(|j| &*j.function).collect();
        assert_eq!(functions, ["busy", "quiet", "busy", "busy"]);
        assert_eq!(waiting.rows, 7);
    }
}
