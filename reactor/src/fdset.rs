//! Watching sockets for readiness: Twisted's `IReactorFDSet`
//! (`addReader`/`removeReader`/`addWriter`/`removeWriter`) over the
//! `polling` crate, level-triggered as Twisted's epoll reactor is.
//!
//! [`Registration`] owns a socket together with its registration in the
//! poller: the socket can only be closed by dropping the registration, and
//! dropping it first removes the socket from the poller. That is the one
//! promise `polling::Poller::add` asks for, so this module holds the
//! crate's only `unsafe` block.

use std::cell::Cell;
use std::io;
use std::rc::Rc;
use std::sync::Arc;

use polling::{AsRawSource, AsSource, Event, PollMode, Poller};
use twisted_deferred::Failure;

use crate::reactor::Reactor;

/// Something the reactor watches (Twisted's `IReadDescriptor` /
/// `IWriteDescriptor`: a listening port, a connection, a connection
/// attempt).
pub(crate) trait Selectable {
    /// The socket is ready: `doRead`/`doWrite`, and the disconnection
    /// handling of `_doReadOrWrite`.
    fn handle_event(self: Rc<Self>, reactor: &Reactor, event: Event);

    /// `connectionLost(reason)` from `disconnectAll()` at shutdown.
    fn disconnect(self: Rc<Self>, reactor: &Reactor, reason: Failure);
}

/// A socket registered with the reactor's poller under `key`, with the
/// readiness it is watched for.
pub(crate) struct Registration<S>
where
    for<'a> &'a S: AsRawSource + AsSource,
{
    poller: Arc<Poller>,
    key: usize,
    reading: Cell<bool>,
    writing: Cell<bool>,
    socket: S,
}

impl<S> Registration<S>
where
    for<'a> &'a S: AsRawSource + AsSource,
{
    /// Registers `socket` (already non-blocking) under `key`, watched for
    /// reading and/or writing.
    pub(crate) fn new(
        poller: Arc<Poller>,
        key: usize,
        socket: S,
        reading: bool,
        writing: bool,
    ) -> io::Result<Self> {
        // SAFETY: `Poller::add` requires the source to be deleted from the
        // poller before it is closed. The socket is owned by the
        // `Registration` built just below and is never moved out of it
        // (only borrowed through `socket()`); `Drop` deletes it from this
        // same poller before the field, and so the socket, is dropped. If
        // `add` fails, nothing was registered.
        unsafe {
            poller.add_with_mode(&socket, Event::new(key, reading, writing), PollMode::Level)?;
        }
        Ok(Registration {
            poller,
            key,
            reading: Cell::new(reading),
            writing: Cell::new(writing),
            socket,
        })
    }

    /// The key events for this socket carry.
    pub(crate) fn key(&self) -> usize {
        self.key
    }

    /// The socket, borrowed.
    pub(crate) fn socket(&self) -> &S {
        &self.socket
    }

    /// `startReading()` / `stopReading()`.
    pub(crate) fn set_reading(&self, on: bool) {
        if self.reading.get() != on {
            self.reading.set(on);
            self.update();
        }
    }

    /// `startWriting()` / `stopWriting()`.
    pub(crate) fn set_writing(&self, on: bool) {
        if self.writing.get() != on {
            self.writing.set(on);
            self.update();
        }
    }

    pub(crate) fn reading(&self) -> bool {
        self.reading.get()
    }

    pub(crate) fn writing(&self) -> bool {
        self.writing.get()
    }

    fn update(&self) {
        let interest = Event::new(self.key, self.reading.get(), self.writing.get());
        if let Err(e) = self
            .poller
            .modify_with_mode(&self.socket, interest, PollMode::Level)
        {
            log::error!("could not change what socket {} is watched for: {e}", self.key);
        }
    }
}

impl<S> Drop for Registration<S>
where
    for<'a> &'a S: AsRawSource + AsSource,
{
    fn drop(&mut self) {
        // Must happen before `self.socket` is dropped (and closed): see the
        // SAFETY comment in `new`.
        if let Err(e) = self.poller.delete(&self.socket) {
            log::error!("could not stop watching socket {}: {e}", self.key);
        }
    }
}
