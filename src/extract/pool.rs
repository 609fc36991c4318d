//! Page buffers handed back once a page is transformed, so the next page is
//! read into memory the process already holds: a page body of a few hundred
//! KiB allocated afresh is mapped and faulted in page by page, then
//! unmapped, for every page of the run.

use std::sync::Mutex;

use crate::json::RecordTape;

/// Buffers kept at most: more than the pages in flight in a run of a few
/// streams (each stream's channel, the page being read and the one being
/// transformed).
const KEPT_BUFFERS: usize = 16;

/// A body buffer larger than this is dropped rather than kept.
const KEPT_BODY_BYTES: usize = 32 << 20;

/// The buffers one page is read into: its body and its record tape.
#[derive(Debug, Default)]
pub struct PageBuffers {
    /// Empty, with the capacity of an earlier page's body.
    pub body: Vec<u8>,
    /// Empty, with the capacity of an earlier page's tape.
    pub records: RecordTape,
}

/// Free page buffers, shared by the streams of a run. It only ever holds
/// buffers that were alive at once, so it adds nothing to the run's peak
/// memory.
#[derive(Debug, Default)]
pub struct PagePool {
    free: Mutex<Vec<PageBuffers>>,
}

impl PagePool {
    /// A free pair of buffers, or new empty ones.
    pub fn take(&self) -> PageBuffers {
        self.free
            .lock()
            .ok()
            .and_then(|mut free| free.pop())
            .unwrap_or_default()
    }

    /// Keeps a page's buffers for a later page (emptied), unless the pool is
    /// full or the body was unusually large.
    pub fn give(&self, body: String, mut records: RecordTape) {
        let mut body = body.into_bytes();
        if body.capacity() > KEPT_BODY_BYTES {
            return;
        }
        body.clear();
        records.clear();
        if let Ok(mut free) = self.free.lock()
            && free.len() < KEPT_BUFFERS
        {
            free.push(PageBuffers { body, records });
        }
    }

    /// Buffers kept now.
    pub fn len(&self) -> usize {
        self.free.lock().map(|free| free.len()).unwrap_or(0)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buffers_come_back_empty_with_their_capacity() {
        let pool = PagePool::default();
        let mut body = String::with_capacity(4096);
        body.push_str(r#"{"items":[]}"#);
        pool.give(body, RecordTape::default());
        assert_eq!(pool.len(), 1);
        let buffers = pool.take();
        assert!(buffers.body.is_empty());
        assert!(buffers.body.capacity() >= 4096);
        assert!(buffers.records.is_empty());
        assert!(pool.is_empty());
        // An empty pool hands out new buffers.
        assert_eq!(pool.take().body.capacity(), 0);
    }

    #[test]
    fn the_pool_is_bounded() {
        let pool = PagePool::default();
        for _ in 0..KEPT_BUFFERS + 5 {
            pool.give(String::with_capacity(16), RecordTape::default());
        }
        assert_eq!(pool.len(), KEPT_BUFFERS);
        pool.take();
        pool.give(
            String::with_capacity(KEPT_BODY_BYTES + 1),
            RecordTape::default(),
        );
        assert_eq!(pool.len(), KEPT_BUFFERS - 1);
    }
}
