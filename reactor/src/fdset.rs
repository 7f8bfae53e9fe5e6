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

    /// Closes the socket and drops the protocol without telling it: the
    /// reactor is going away and can never deliver anything again. Breaks
    /// the cycle between a connection and its protocol (which holds the
    /// transport).
    fn release(&self);
}

/// A socket owned together with its registration in the reactor's poller
/// under `key`, and the readiness it is watched for. As in Twisted's epoll
/// reactor, a socket watched for nothing is taken out of the poller (so a
/// hang-up on a paused or half-closed connection is not reported until it
/// is watched again).
pub(crate) struct Registration<S>
where
    for<'a> &'a S: AsRawSource + AsSource,
{
    poller: Arc<Poller>,
    key: usize,
    reading: Cell<bool>,
    writing: Cell<bool>,
    /// In the poller now.
    registered: Cell<bool>,
    socket: S,
}

impl<S> Registration<S>
where
    for<'a> &'a S: AsRawSource + AsSource,
{
    /// Takes `socket` (already non-blocking) and watches it under `key`
    /// for reading and/or writing.
    pub(crate) fn new(
        poller: Arc<Poller>,
        key: usize,
        socket: S,
        reading: bool,
        writing: bool,
    ) -> io::Result<Self> {
        let registration = Registration {
            poller,
            key,
            reading: Cell::new(reading),
            writing: Cell::new(writing),
            registered: Cell::new(false),
            socket,
        };
        if reading || writing {
            registration.add()?;
        }
        Ok(registration)
    }

    /// Adds the socket to the poller.
    fn add(&self) -> io::Result<()> {
        let interest = Event::new(self.key, self.reading.get(), self.writing.get());
        // SAFETY: `Poller::add` requires the source to be deleted from the
        // poller before it is closed. The socket is owned by this
        // `Registration` and never moved out of it (only borrowed through
        // `socket()`), so it is closed only when the `Registration` is
        // dropped; `Drop` first deletes it from this same poller whenever
        // `registered` says it was added (and `update` deletes it before
        // clearing that flag). If `add` fails, nothing was registered.
        unsafe {
            self.poller
                .add_with_mode(&self.socket, interest, PollMode::Level)?;
        }
        self.registered.set(true);
        Ok(())
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
        let (reading, writing) = (self.reading.get(), self.writing.get());
        let outcome = if !reading && !writing {
            if self.registered.get() {
                let deleted = self.poller.delete(&self.socket);
                if deleted.is_ok() {
                    self.registered.set(false);
                }
                deleted
            } else {
                Ok(())
            }
        } else if self.registered.get() {
            let interest = Event::new(self.key, reading, writing);
            self.poller
                .modify_with_mode(&self.socket, interest, PollMode::Level)
        } else {
            self.add()
        };
        if let Err(e) = outcome {
            log::error!(
                "could not change what socket {} is watched for: {e}",
                self.key
            );
        }
    }
}

impl<S> Drop for Registration<S>
where
    for<'a> &'a S: AsRawSource + AsSource,
{
    fn drop(&mut self) {
        // Must happen before `self.socket` is dropped (and closed): see the
        // SAFETY comment in `add`.
        if self.registered.get()
            && let Err(e) = self.poller.delete(&self.socket)
        {
            log::error!("could not stop watching socket {}: {e}", self.key);
        }
    }
}
