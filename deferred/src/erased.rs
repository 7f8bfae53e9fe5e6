//! Type-erased values and callbacks kept inline when they are small.
//!
//! A Deferred's result changes type along its chain (Twisted's `result`
//! attribute holds whatever the last callback returned), so the chain stores
//! it type-erased. Boxing every intermediate value would cost an allocation
//! per callback; instead values and callback closures of up to three machine
//! words live inline in an [`Storage`] and only bigger ones go to the heap.
//! This is the only module of the crate with `unsafe` code; its tests run
//! under Miri (`cargo +nightly miri test -p twisted-deferred --lib erased`).

use std::any::TypeId;
use std::fmt;
use std::marker::PhantomData;
use std::mem::{self, ManuallyDrop, MaybeUninit};
use std::ptr;

/// Number of machine words stored inline.
const WORDS: usize = 3;

/// Raw, possibly uninitialised storage for one erased object: either the
/// object itself (when it fits) or a pointer to a heap allocation holding it.
///
/// `Storage` does not know what it holds; whoever created it keeps the type
/// (through a vtable) and must read or drop it exactly once as that type.
pub(crate) struct Storage([MaybeUninit<usize>; WORDS]);

/// True when a `T` is stored inline rather than boxed.
pub(crate) const fn fits_inline<T>() -> bool {
    mem::size_of::<T>() <= mem::size_of::<Storage>()
        && mem::align_of::<T>() <= mem::align_of::<Storage>()
}

impl Storage {
    /// Moves `value` into a new storage, inline if it fits, boxed otherwise.
    pub(crate) fn new<T>(value: T) -> Storage {
        let mut storage = Storage([MaybeUninit::uninit(); WORDS]);
        let slot = storage.0.as_mut_ptr();
        if fits_inline::<T>() {
            // SAFETY: `fits_inline` guarantees the buffer is large enough and
            // aligned enough for a `T`; the buffer is ours and uninitialised.
            unsafe { ptr::write(slot.cast::<T>(), value) }
        } else {
            let boxed = Box::into_raw(Box::new(value));
            // SAFETY: the buffer is at least one word, aligned for a pointer.
            unsafe { ptr::write(slot.cast::<*mut T>(), boxed) }
        }
        storage
    }

    /// Pointer to the stored `T`.
    ///
    /// # Safety
    /// The storage must have been created by `Storage::new::<T>` and not yet
    /// consumed by `take`/`drop_as`.
    unsafe fn ptr<T>(&self) -> *const T {
        let slot = self.0.as_ptr();
        if fits_inline::<T>() {
            slot.cast::<T>()
        } else {
            // SAFETY: per the contract, the first word holds the box pointer.
            unsafe { ptr::read(slot.cast::<*const T>()) }
        }
    }

    /// Shared reference to the stored `T`.
    ///
    /// # Safety
    /// As for [`Storage::ptr`].
    pub(crate) unsafe fn get<T>(&self) -> &T {
        // SAFETY: the contract guarantees a live, initialised `T` there, and
        // the reference cannot outlive `self`.
        unsafe { &*self.ptr::<T>() }
    }

    /// Moves the stored `T` out, freeing the box if there is one.
    ///
    /// # Safety
    /// As for [`Storage::ptr`]; the storage must not be used afterwards.
    pub(crate) unsafe fn take<T>(self) -> T {
        let slot = self.0.as_ptr();
        if fits_inline::<T>() {
            // SAFETY: an initialised `T` is stored inline; `self` is consumed
            // so it is read exactly once.
            unsafe { ptr::read(slot.cast::<T>()) }
        } else {
            // SAFETY: the first word is the pointer from `Box::into_raw`.
            unsafe { *Box::from_raw(ptr::read(slot.cast::<*mut T>())) }
        }
    }

    /// Drops the stored `T` in place.
    ///
    /// # Safety
    /// As for [`Storage::ptr`]; the storage must not be used afterwards.
    pub(crate) unsafe fn drop_as<T>(&mut self) {
        let slot = self.0.as_mut_ptr();
        if fits_inline::<T>() {
            // SAFETY: an initialised `T` is stored inline and is dropped once.
            unsafe { ptr::drop_in_place(slot.cast::<T>()) }
        } else {
            // SAFETY: the first word is the pointer from `Box::into_raw`.
            unsafe { drop(Box::from_raw(ptr::read(slot.cast::<*mut T>()))) }
        }
    }
}

/// Per-type operations of an [`ErasedValue`].
pub(crate) struct ValueVTable {
    type_id: TypeId,
    type_name: fn() -> &'static str,
    drop: unsafe fn(&mut Storage),
    clone: Option<unsafe fn(&Storage) -> Storage>,
    debug: Option<unsafe fn(&Storage, &mut fmt::Formatter<'_>) -> fmt::Result>,
}

unsafe fn drop_value<T>(storage: &mut Storage) {
    // SAFETY: only installed in the vtable of an `ErasedValue` holding a `T`.
    unsafe { storage.drop_as::<T>() }
}

unsafe fn clone_value<T: Clone>(storage: &Storage) -> Storage {
    // SAFETY: only installed in the vtable of an `ErasedValue` holding a `T`.
    Storage::new(unsafe { storage.get::<T>() }.clone())
}

unsafe fn debug_value<T: fmt::Debug>(storage: &Storage, f: &mut fmt::Formatter<'_>) -> fmt::Result {
    // SAFETY: only installed in the vtable of an `ErasedValue` holding a `T`.
    fmt::Debug::fmt(unsafe { storage.get::<T>() }, f)
}

struct Plain<T>(PhantomData<T>);
impl<T: 'static> Plain<T> {
    const VTABLE: &'static ValueVTable = &ValueVTable {
        type_id: TypeId::of::<T>(),
        type_name: std::any::type_name::<T>,
        drop: drop_value::<T>,
        clone: None,
        debug: None,
    };
}

struct Cloneable<T>(PhantomData<T>);
impl<T: Clone + 'static> Cloneable<T> {
    const VTABLE: &'static ValueVTable = &ValueVTable {
        type_id: TypeId::of::<T>(),
        type_name: std::any::type_name::<T>,
        drop: drop_value::<T>,
        clone: Some(clone_value::<T>),
        debug: None,
    };
}

struct Shareable<T>(PhantomData<T>);
impl<T: Clone + fmt::Debug + 'static> Shareable<T> {
    const VTABLE: &'static ValueVTable = &ValueVTable {
        type_id: TypeId::of::<T>(),
        type_name: std::any::type_name::<T>,
        drop: drop_value::<T>,
        clone: Some(clone_value::<T>),
        debug: Some(debug_value::<T>),
    };
}

/// A value of any `'static` type, stored inline when it is small.
///
/// Values created with [`ErasedValue::new_shareable`] can also be cloned and
/// printed without knowing their type; plain ones only know their type.
pub(crate) struct ErasedValue {
    vtable: &'static ValueVTable,
    data: Storage,
}

impl ErasedValue {
    /// Erases a value whose type offers no more than `'static`.
    #[inline]
    pub(crate) fn new<T: 'static>(value: T) -> ErasedValue {
        ErasedValue {
            vtable: Plain::<T>::VTABLE,
            data: Storage::new(value),
        }
    }

    /// Erases a value that can later be cloned and printed while erased.
    #[inline]
    pub(crate) fn new_shareable<T: Clone + fmt::Debug + 'static>(value: T) -> ErasedValue {
        ErasedValue {
            vtable: Shareable::<T>::VTABLE,
            data: Storage::new(value),
        }
    }

    /// Erases a value that can later be cloned (but not printed) while
    /// erased.
    #[inline]
    pub(crate) fn new_cloneable<T: Clone + 'static>(value: T) -> ErasedValue {
        ErasedValue {
            vtable: Cloneable::<T>::VTABLE,
            data: Storage::new(value),
        }
    }

    /// True when the value is a `T`.
    #[inline]
    pub(crate) fn is<T: 'static>(&self) -> bool {
        self.vtable.type_id == TypeId::of::<T>()
    }

    /// The name of the stored value's type.
    pub(crate) fn type_name(&self) -> &'static str {
        (self.vtable.type_name)()
    }

    /// True when [`ErasedValue::try_clone`] succeeds.
    #[inline]
    pub(crate) fn is_shareable(&self) -> bool {
        self.vtable.clone.is_some()
    }

    /// Moves the value out as a `T`, or gives it back unchanged.
    #[inline]
    pub(crate) fn downcast<T: 'static>(self) -> Result<T, ErasedValue> {
        if !self.is::<T>() {
            return Err(self);
        }
        let this = ManuallyDrop::new(self);
        // SAFETY: the type id matches, so the storage holds a `T`; `this` is
        // never dropped, so the value is moved out exactly once.
        Ok(unsafe { ptr::read(&this.data).take::<T>() })
    }

    /// Borrows the value as a `T`.
    #[inline]
    pub(crate) fn downcast_ref<T: 'static>(&self) -> Option<&T> {
        if self.is::<T>() {
            // SAFETY: the type id matches, so the storage holds a live `T`.
            Some(unsafe { self.data.get::<T>() })
        } else {
            None
        }
    }

    /// A copy of the value, when it was created shareable.
    pub(crate) fn try_clone(&self) -> Option<ErasedValue> {
        let clone = self.vtable.clone?;
        Some(ErasedValue {
            vtable: self.vtable,
            // SAFETY: the vtable belongs to the stored type.
            data: unsafe { clone(&self.data) },
        })
    }
}

impl fmt::Debug for ErasedValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.vtable.debug {
            // SAFETY: the vtable belongs to the stored type.
            Some(debug) => unsafe { debug(&self.data, f) },
            None => write!(f, "<{}>", self.type_name()),
        }
    }
}

impl Drop for ErasedValue {
    fn drop(&mut self) {
        // SAFETY: the vtable belongs to the stored type and the value is
        // dropped once, here.
        unsafe { (self.vtable.drop)(&mut self.data) }
    }
}

/// Operations of a [`SmallFnOnce`].
struct FnVTable<A: 'static, R: 'static> {
    call: unsafe fn(Storage, A) -> R,
    drop: unsafe fn(&mut Storage),
}

unsafe fn call_fn<F: FnOnce(A) -> R, A, R>(storage: Storage, arg: A) -> R {
    // SAFETY: only installed in the vtable of a `SmallFnOnce` holding an `F`.
    let f = unsafe { storage.take::<F>() };
    f(arg)
}

struct FnTable<F, A, R>(PhantomData<(F, A, R)>);
impl<F: FnOnce(A) -> R, A: 'static, R: 'static> FnTable<F, A, R> {
    const VTABLE: &'static FnVTable<A, R> = &FnVTable {
        call: call_fn::<F, A, R>,
        drop: drop_value::<F>,
    };
}

/// A `Box<dyn FnOnce(A) -> R>` that needs no allocation when the closure's
/// captures fit in three words.
pub(crate) struct SmallFnOnce<A: 'static, R: 'static> {
    vtable: &'static FnVTable<A, R>,
    data: Storage,
}

impl<A: 'static, R: 'static> SmallFnOnce<A, R> {
    /// Erases `f`.
    #[inline]
    pub(crate) fn new<F: FnOnce(A) -> R + 'static>(f: F) -> Self {
        SmallFnOnce {
            vtable: FnTable::<F, A, R>::VTABLE,
            data: Storage::new(f),
        }
    }

    /// Calls the closure, consuming it.
    #[inline]
    pub(crate) fn call(self, arg: A) -> R {
        let this = ManuallyDrop::new(self);
        // SAFETY: the vtable belongs to the stored closure, which is moved
        // out exactly once (`this` is never dropped).
        unsafe { (this.vtable.call)(ptr::read(&this.data), arg) }
    }
}

impl<A: 'static, R: 'static> Drop for SmallFnOnce<A, R> {
    fn drop(&mut self) {
        // SAFETY: the vtable belongs to the stored closure, dropped once.
        unsafe { (self.vtable.drop)(&mut self.data) }
    }
}

impl<A: 'static, R: 'static> fmt::Debug for SmallFnOnce<A, R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<callback>")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;
    use std::rc::Rc;

    /// Counts drops, to prove every stored value is dropped exactly once.
    #[derive(Clone, Debug)]
    struct Tracked<const N: usize> {
        drops: Rc<Cell<usize>>,
        payload: [u8; N],
    }
    impl<const N: usize> Drop for Tracked<N> {
        fn drop(&mut self) {
            self.drops.set(self.drops.get() + 1);
        }
    }

    #[test]
    fn small_values_are_inline_and_large_ones_boxed() {
        assert!(fits_inline::<u64>());
        assert!(fits_inline::<String>());
        assert!(fits_inline::<Tracked<8>>());
        assert!(!fits_inline::<Tracked<64>>());
        assert!(!fits_inline::<[u64; 4]>());
        assert_eq!(fits_inline::<u128>(), mem::align_of::<u128>() <= 8);
    }

    #[test]
    fn downcast_moves_the_value_out_once() {
        let drops = Rc::new(Cell::new(0));
        let v = ErasedValue::new(Tracked::<8> {
            drops: drops.clone(),
            payload: [7; 8],
        });
        let back = v.downcast::<Tracked<8>>().ok().unwrap();
        assert_eq!(back.payload, [7; 8]);
        assert_eq!(drops.get(), 0);
        drop(back);
        assert_eq!(drops.get(), 1);

        let big = ErasedValue::new(Tracked::<64> {
            drops: drops.clone(),
            payload: [3; 64],
        });
        let back = big.downcast::<Tracked<64>>().ok().unwrap();
        assert_eq!(back.payload[63], 3);
        drop(back);
        assert_eq!(drops.get(), 2);
    }

    #[test]
    fn a_wrong_downcast_gives_the_value_back() {
        let drops = Rc::new(Cell::new(0));
        let v = ErasedValue::new(Tracked::<64> {
            drops: drops.clone(),
            payload: [1; 64],
        });
        let v = v.downcast::<u32>().unwrap_err();
        assert!(v.downcast_ref::<u32>().is_none());
        assert_eq!(v.downcast_ref::<Tracked<64>>().unwrap().payload[0], 1);
        assert!(v.type_name().contains("Tracked"));
        drop(v);
        assert_eq!(drops.get(), 1);
    }

    #[test]
    fn shareable_values_clone_and_print() {
        let drops = Rc::new(Cell::new(0));
        for inline in [true, false] {
            let v = if inline {
                ErasedValue::new_shareable(Tracked::<8> {
                    drops: drops.clone(),
                    payload: [2; 8],
                })
            } else {
                ErasedValue::new_shareable(String::from("héllo"))
            };
            let c = v.try_clone().unwrap();
            assert_eq!(format!("{v:?}"), format!("{c:?}"));
        }
        assert_eq!(drops.get(), 2);
        let plain = ErasedValue::new(5u8);
        assert!(plain.try_clone().is_none());
        assert_eq!(format!("{plain:?}"), "<u8>");
        let zst = ErasedValue::new_shareable(());
        assert_eq!(format!("{:?}", zst.try_clone().unwrap()), "()");
    }

    #[test]
    fn closures_are_called_once_or_dropped() {
        let drops = Rc::new(Cell::new(0));
        let t = Tracked::<8> {
            drops: drops.clone(),
            payload: [4; 8],
        };
        let f = SmallFnOnce::new(move |x: u32| {
            let t = t;
            x + u32::from(t.payload[0])
        });
        assert_eq!(f.call(1), 5);
        assert_eq!(drops.get(), 1);

        let t = Tracked::<64> {
            drops: drops.clone(),
            payload: [9; 64],
        };
        let f = SmallFnOnce::new(move |x: u32| {
            let t = t;
            x + u32::from(t.payload[63])
        });
        drop(f);
        assert_eq!(drops.get(), 2);

        let f = SmallFnOnce::new(|s: String| s.len());
        assert_eq!(f.call("abc".into()), 3);
    }
}
