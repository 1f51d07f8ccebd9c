//! One byte budget for every connection's head reassembly buffers.
//!
//! Per-connection limits alone multiply past any memory limit
//! (`max_connections` × 2 directions × `max_head_bytes` = 2 GiB at the
//! defaults): many slow clients that each send half a head would pin all of
//! it. Buffers are charged by capacity against one budget; a head that does
//! not fit is parsed as truncated (what was buffered, or the captured chunk
//! alone) and counted, so the exchange is still measured.
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

/// The shared budget. The pipeline is one thread; atomics only because the
/// tracker is built on another thread and moved.
#[derive(Debug)]
pub(crate) struct HeadBudget {
    max: usize,
    used: AtomicUsize,
    exhausted: AtomicU64,
}

impl HeadBudget {
    pub(crate) fn new(max: usize) -> Arc<Self> {
        Arc::new(Self {
            max,
            used: AtomicUsize::new(0),
            exhausted: AtomicU64::new(0),
        })
    }

    /// Bytes charged now (buffer capacity).
    pub(crate) fn used(&self) -> usize {
        self.used.load(Ordering::Relaxed)
    }

    /// Heads cut short because the budget was spent.
    pub(crate) fn exhausted(&self) -> u64 {
        self.exhausted.load(Ordering::Relaxed)
    }

    fn free(&self) -> usize {
        self.max.saturating_sub(self.used())
    }
}

/// A head buffer charged to a [`HeadBudget`]; returns its bytes when cleared
/// or dropped.
#[derive(Debug)]
pub(crate) struct HeadBuf {
    buf: Vec<u8>,
    budget: Arc<HeadBudget>,
}

impl HeadBuf {
    pub(crate) fn new(budget: Arc<HeadBudget>) -> Self {
        Self {
            buf: Vec::new(),
            budget,
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.buf.len()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    pub(crate) fn bytes(&self) -> &[u8] {
        &self.buf
    }

    /// How many of `wanted` more bytes fit, given the budget; a shortfall is
    /// counted once per head by the caller through [`Self::note_exhausted`].
    pub(crate) fn room(&self, wanted: usize) -> usize {
        let spare = self.buf.capacity() - self.buf.len();
        wanted.min(spare + self.budget.free())
    }

    pub(crate) fn note_exhausted(&self) {
        self.budget.exhausted.fetch_add(1, Ordering::Relaxed);
    }

    /// Append `data` (the caller sized it with [`Self::room`]), growing the
    /// buffer to exactly what it needs: doubling would charge twice the head.
    pub(crate) fn extend(&mut self, data: &[u8]) {
        let before = self.buf.capacity();
        self.buf.reserve_exact(data.len());
        self.buf.extend_from_slice(data);
        let grown = self.buf.capacity() - before;
        if grown > 0 {
            self.budget.used.fetch_add(grown, Ordering::Relaxed);
        }
    }

    /// Empty it and give its memory back: most heads arrive whole and never
    /// use this buffer, so an idle keep-alive connection should hold nothing.
    pub(crate) fn clear(&mut self) {
        self.give_back();
        self.buf = Vec::new();
    }

    fn give_back(&mut self) {
        let cap = self.buf.capacity();
        if cap > 0 {
            self.budget.used.fetch_sub(cap, Ordering::Relaxed);
        }
    }
}

impl Drop for HeadBuf {
    fn drop(&mut self) {
        self.give_back();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buffers_are_charged_by_capacity_and_give_it_back() {
        let b = HeadBudget::new(100);
        let mut x = HeadBuf::new(b.clone());
        let mut y = HeadBuf::new(b.clone());
        assert_eq!(x.room(60), 60);
        x.extend(&[b'a'; 60]);
        assert_eq!(b.used(), 60);
        assert_eq!(y.room(60), 40, "only what is left");
        y.extend(&[b'b'; 40]);
        assert_eq!(y.room(1), 0);
        x.clear();
        assert_eq!(b.used(), 40);
        drop(y);
        assert_eq!(b.used(), 0);
    }
}
