//! [`AnyValue`]: a dynamically typed result, for code ported from Python line
//! by line where a Deferred's result changes type as it goes.

use std::fmt;
use std::rc::Rc;

use crate::erased::ErasedValue;

/// A value of any type, shared the way Python shares objects.
///
/// `Deferred<AnyValue>` (which is what a bare `Deferred` means) is the
/// dynamically typed mode: each callback receives an `AnyValue` and returns
/// any value it likes, as a Python callback does. Cloning an `AnyValue` is a
/// cheap copy of a small value or of a reference, and a Deferred handled as
/// `AnyValue` keeps Twisted's sharing behaviour exactly (see
/// [`Deferred`](crate::Deferred), "Values and sharing").
///
/// Python's `None` is [`AnyValue::none()`], which holds `()`.
///
/// ```
/// use twisted_deferred::{AnyValue, Deferred};
///
/// // d = Deferred(); d.addCallback(str); d.addCallback(len); d.callback(1234)
/// let d: Deferred = Deferred::new();
/// d.add_callback(|v: AnyValue| Ok(AnyValue::new(v.downcast_ref::<i64>().unwrap().to_string())));
/// d.add_callback(|v: AnyValue| Ok(AnyValue::new(v.downcast_ref::<String>().unwrap().len())));
/// d.callback(AnyValue::new(1234i64)).unwrap();
/// assert_eq!(d.result().value().unwrap().downcast_ref::<usize>(), Some(&4));
/// ```
pub struct AnyValue(Repr);

enum Repr {
    /// A value that can be cloned and printed while erased.
    Owned(ErasedValue),
    /// A value that cannot be cloned, shared behind a reference count.
    Shared(Rc<ErasedValue>),
}

/// How a non-clonable [`AnyValue`] is kept inside a Deferred's result.
#[derive(Clone)]
pub(crate) struct SharedValue(Rc<ErasedValue>);

impl fmt::Debug for SharedValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}

impl AnyValue {
    /// Wraps a value. An `AnyValue` given here is returned as it is.
    pub fn new<T: Clone + fmt::Debug + 'static>(value: T) -> AnyValue {
        match crate::cast::<T, AnyValue>(value) {
            Ok(any) => any,
            Err(value) => AnyValue(Repr::Owned(ErasedValue::new_shareable(value))),
        }
    }

    /// Wraps a value that is neither `Clone` nor `Debug`; clones of the
    /// `AnyValue` share it, and it prints as its type name.
    pub fn opaque<T: 'static>(value: T) -> AnyValue {
        AnyValue(Repr::Shared(Rc::new(ErasedValue::new(value))))
    }

    /// Python's `None`.
    pub fn none() -> AnyValue {
        AnyValue::new(())
    }

    /// True for Python's `None` (a `()`).
    pub fn is_none(&self) -> bool {
        self.is::<()>()
    }

    /// True when the value is a `T`.
    pub fn is<T: 'static>(&self) -> bool {
        self.erased().is::<T>()
    }

    /// Borrows the value as a `T`.
    pub fn downcast_ref<T: 'static>(&self) -> Option<&T> {
        self.erased().downcast_ref::<T>()
    }

    /// Moves the value out as a `T`. Fails (giving the value back) when it is
    /// another type, or when it was made with [`AnyValue::opaque`] and other
    /// clones of it still exist.
    pub fn downcast<T: 'static>(self) -> Result<T, AnyValue> {
        match self.0 {
            Repr::Owned(v) => v.downcast::<T>().map_err(|v| AnyValue(Repr::Owned(v))),
            Repr::Shared(rc) => {
                if !rc.is::<T>() {
                    return Err(AnyValue(Repr::Shared(rc)));
                }
                match Rc::try_unwrap(rc) {
                    Ok(v) => v
                        .downcast::<T>()
                        .map_err(|v| AnyValue(Repr::Shared(Rc::new(v)))),
                    Err(rc) => Err(AnyValue(Repr::Shared(rc))),
                }
            }
        }
    }

    /// The name of the value's type.
    pub fn type_name(&self) -> &'static str {
        self.erased().type_name()
    }

    fn erased(&self) -> &ErasedValue {
        match &self.0 {
            Repr::Owned(v) => v,
            Repr::Shared(rc) => rc,
        }
    }

    /// Wraps a value taken from a Deferred's result.
    pub(crate) fn from_erased(value: ErasedValue) -> AnyValue {
        match value.downcast::<SharedValue>() {
            Ok(SharedValue(rc)) => AnyValue(Repr::Shared(rc)),
            Err(value) if value.is_shareable() => AnyValue(Repr::Owned(value)),
            Err(value) => AnyValue(Repr::Shared(Rc::new(value))),
        }
    }

    /// The form stored as a Deferred's result (the wrapped value itself, so
    /// that typed handles of the same Deferred find their type).
    pub(crate) fn into_erased(self) -> ErasedValue {
        match self.0 {
            Repr::Owned(v) => v,
            Repr::Shared(rc) => ErasedValue::new_shareable(SharedValue(rc)),
        }
    }
}

impl Clone for AnyValue {
    fn clone(&self) -> Self {
        match &self.0 {
            Repr::Owned(v) => match v.try_clone() {
                Some(c) => AnyValue(Repr::Owned(c)),
                // `Owned` only ever holds shareable values.
                None => unreachable!("AnyValue holds a value it cannot clone"),
            },
            Repr::Shared(rc) => AnyValue(Repr::Shared(rc.clone())),
        }
    }
}

impl fmt::Debug for AnyValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.erased(), f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_round_trip_and_keep_their_type() {
        let v = AnyValue::new(String::from("x"));
        assert!(v.is::<String>());
        assert_eq!(format!("{v:?}"), "\"x\"");
        let c = v.clone();
        assert_eq!(c.downcast::<String>().unwrap(), "x");
        assert!(v.downcast::<i32>().is_err());
        assert!(AnyValue::none().is_none());
        assert!(AnyValue::new(AnyValue::new(3u8)).is::<u8>());
    }

    #[test]
    fn opaque_values_are_shared_until_unique() {
        struct NoClone(u32);
        let v = AnyValue::opaque(NoClone(7));
        let c = v.clone();
        assert!(format!("{v:?}").contains("NoClone"));
        let v = v.downcast::<NoClone>().err().unwrap();
        drop(c);
        assert_eq!(v.downcast::<NoClone>().ok().unwrap().0, 7);
    }

    #[test]
    fn stored_forms_come_back_as_they_were() {
        let v = AnyValue::opaque(5u16);
        let stored = v.clone().into_erased();
        let back = AnyValue::from_erased(stored);
        assert_eq!(back.downcast_ref::<u16>(), Some(&5));
        let w = AnyValue::from_erased(AnyValue::new(9i64).into_erased());
        assert_eq!(w.downcast_ref::<i64>(), Some(&9));
    }
}
