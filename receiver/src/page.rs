//! A page rendered on a thread of its own and sent to the client piece by piece.
//!
//! At a million series `/metrics` is a 167 MB page. Built whole, it cost its size in memory
//! per scrape under way and reached the client only once complete, so the client's reading
//! (and the kernel's copies) came after the render instead of beside it (the fan-in bench).
//! [`spawn_render`] writes the page through a [`PageWriter`] on a new thread into a channel
//! of [`PIECES_AHEAD`] pieces of about [`PIECE_BYTES`]; the response's [`PageBody`] hands
//! them to hyper as the connection takes them. A render is at most that many pieces ahead
//! of its reader, and a reader that goes away (the client disconnects, or a `HEAD` request
//! whose body is never read) ends its render at the next full piece.
//!
//! The render thread runs at a lower CPU priority ([`RENDER_NICE_INCREMENT`]): a render is a
//! few hundred milliseconds of CPU, and on a busy host the runtime workers that acknowledge
//! senders' batches should win the CPU over it (Linux keeps the nice value per thread; the
//! thread ends with the render, so it is never restored).
//!
//! The body ends cleanly only after the render's last piece; a render that stops before
//! (it panicked, or its reader took no piece for a while, [`PIECE_TAKEN_WITHIN`]) makes the body
//! fail, so hyper aborts the response rather than ending a truncated page as if it were
//! complete.

use std::io;
use std::pin::Pin;
use std::sync::mpsc as std_mpsc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use hyper::body::{Body, Frame, SizeHint};
use tokio::sync::mpsc;
use tracing::{debug, warn};

use crate::exposition::{PageWriter, ReaderGone};

/// Bytes per piece of a page: a few writes' worth for the kernel, small enough to stay in
/// the cache between the render that writes it and the socket write that copies it.
pub const PIECE_BYTES: usize = 64 * 1024;

/// Pieces a render may be ahead of its reader: the memory a scrape under way needs beyond
/// hyper's and the socket's buffers.
pub const PIECES_AHEAD: usize = 4;

/// Longest a render waits for its reader to take a piece, by default; then it stops and the
/// response is aborted. A client that stops reading would otherwise hold a render turn (of
/// [`crate::http::MAX_RENDERS`]) for as long as it keeps its connection open.
pub const PIECE_TAKEN_WITHIN: Duration = Duration::from_secs(30);

/// How much the render thread's nice value is raised (lower priority) for a render.
pub const RENDER_NICE_INCREMENT: i32 = 10;

/// What a render thread sends: pieces, then the end of the page.
#[derive(Debug)]
enum Piece {
    Text(Bytes),
    End,
}

/// A page's body: the pieces of a render as it produces them.
#[derive(Debug)]
pub struct PageBody {
    pieces: mpsc::Receiver<Piece>,
    ended: bool,
}

impl Body for PageBody {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        if self.ended {
            return Poll::Ready(None);
        }
        match self.pieces.poll_recv(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Some(Piece::Text(text))) => Poll::Ready(Some(Ok(Frame::data(text)))),
            Poll::Ready(Some(Piece::End)) => {
                self.ended = true;
                Poll::Ready(None)
            }
            Poll::Ready(None) => {
                self.ended = true;
                Poll::Ready(Some(Err(io::Error::other(
                    "the page's render stopped before the end of the page",
                ))))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.ended
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::default()
    }
}

/// Runs `render` on a new thread of lower priority, writing into pieces of
/// [`PIECE_BYTES`] that the returned body yields; `render` finishes its writer when the
/// page is complete. A piece not taken within `taken_within` stops the render. Whatever `render` holds (a render slot) is released when the thread
/// ends, however the render ended.
///
/// # Panics
/// Outside a tokio runtime (its timers bound the waits for the reader).
///
/// # Errors
/// When the thread cannot be started.
pub fn spawn_render<R>(taken_within: Duration, render: R) -> io::Result<PageBody>
where
    R: FnOnce(PageWriter<'_>) -> Result<(), ReaderGone> + Send + 'static,
{
    let (tx, rx) = mpsc::channel(PIECES_AHEAD);
    // The runtime's timers bound each wait for the reader.
    let runtime = tokio::runtime::Handle::current();
    std::thread::Builder::new()
        .name("relay-render".into())
        .spawn(move || {
            lower_priority();
            // The timeout's timer is made inside `block_on`: only there is the runtime
            // this thread's context.
            let send = |piece: Piece| match runtime
                .block_on(async { tokio::time::timeout(taken_within, tx.send(piece)).await })
            {
                Ok(Ok(())) => Ok(()),
                Ok(Err(_)) => {
                    debug!("the page's reader went away; render stopped");
                    Err(ReaderGone)
                }
                Err(_) => {
                    warn!(
                        within = ?taken_within,
                        "a client stopped reading its page; render stopped"
                    );
                    Err(ReaderGone)
                }
            };
            let (recycle, recycled) = std_mpsc::channel();
            let mut deliver = |text: String| {
                send(Piece::Text(Bytes::from_owner(Recycled {
                    text,
                    recycle: recycle.clone(),
                })))?;
                Ok(recycled.try_recv().unwrap_or_default())
            };
            if render(PageWriter::in_pieces(PIECE_BYTES, &mut deliver)).is_ok() {
                // A reader gone by now has nothing left to miss.
                let _ = send(Piece::End);
            }
        })?;
    Ok(PageBody {
        pieces: rx,
        ended: false,
    })
}

/// A piece's text, sent back to its render when hyper is done with it, so the render writes
/// its next pieces into memory already faulted in instead of fresh pages (the allocator
/// returns freed pieces to the kernel: 41,000 page faults per 167 MB page).
struct Recycled {
    text: String,
    recycle: std_mpsc::Sender<String>,
}

impl AsRef<[u8]> for Recycled {
    fn as_ref(&self) -> &[u8] {
        self.text.as_bytes()
    }
}

impl Drop for Recycled {
    fn drop(&mut self) {
        // After the render has ended nobody takes it back: it is freed.
        let _ = self.recycle.send(std::mem::take(&mut self.text));
    }
}

/// Raises this thread's nice value by [`RENDER_NICE_INCREMENT`] (Linux: per thread); a
/// failure only leaves the render at the runtime's priority.
fn lower_priority() {
    let tid = rustix::thread::gettid();
    let lowered = rustix::process::getpriority_process(Some(tid)).and_then(|nice| {
        rustix::process::setpriority_process(Some(tid), (nice + RENDER_NICE_INCREMENT).min(19))
    });
    if let Err(e) = lowered {
        debug!(cause = %e, "failed to lower the render thread's priority");
    }
}
