//! The `extern "C"` entry points the export macro installs in a plugin's descriptor.
//!
//! Each one runs the service's code under `catch_unwind`: since Rust 1.81 a panic that reaches
//! an `extern "C"` boundary aborts the process, which here would be the host's. A panic becomes
//! [`STATUS_PANIC`] with its message written to the error sink.
//!
//! The instance pointer the host holds is a `Box<Instance<S>>`: the service together with what
//! the shim learned about the host that created it (which statuses it understands).

use std::any::Any;
use std::ffi::c_void;
use std::panic::{AssertUnwindSafe, catch_unwind};

use crate::abi::{
    HostApi, RawBytes, RawStr, STATUS_DEPENDENCY, STATUS_ERROR, STATUS_OK, STATUS_PANIC,
    STATUS_REFUSED, WriteSink,
};
use crate::service::{Host, Output, write_to_sink};
use crate::typed::Serve;
use crate::{Service, Stateful};

/// What the opaque instance pointer handed to the host points at.
struct Instance<S> {
    service: S,
    /// The status a refusal is reported with: [`STATUS_REFUSED`] to a host that understands it,
    /// [`STATUS_ERROR`] to an older one, which would take an unknown status for a broken plugin
    /// and lose the message.
    refusal_status: i32,
}

impl<S> Instance<S> {
    /// The status to report `error`, returned by the service's `call`, with.
    fn status_of(&self, error: &crate::Error) -> i32 {
        if error.is_refusal() { self.refusal_status } else { STATUS_ERROR }
    }
}

/// `CreateFn` for `S`.
///
/// # Safety
/// `host` must be null or valid for the rest of the process; `instance_out` must be valid for a
/// write; `error` must point at a valid host sink.
pub(crate) unsafe extern "C" fn create<S: Service>(
    host: *const HostApi,
    instance_out: *mut *mut c_void,
    error: *const WriteSink,
) -> i32 {
    // SAFETY: this function's contract is `instantiate`'s.
    // A refused `create` refuses the load or swap that asked for it, like any other error.
    unsafe { instantiate(host, instance_out, error, false, S::create) }
}

/// `ImportStateFn` for `S`.
///
/// # Safety
/// As [`create`], and `state` must describe memory valid for the call.
pub(crate) unsafe extern "C" fn import_state<S: Stateful>(
    host: *const HostApi,
    format: u32,
    state: RawBytes,
    instance_out: *mut *mut c_void,
    error: *const WriteSink,
) -> i32 {
    // SAFETY: the caller vouches that `state` stays valid for this call.
    let state = unsafe { state.as_slice() };
    // SAFETY: this function's contract includes `instantiate`'s.
    unsafe {
        instantiate(host, instance_out, error, true, |host| S::from_state(host, format, state))
    }
}

/// Runs `make` under `catch_unwind` and hands the instance it makes to the host; reports a
/// refusal as one if `refusals`, as a failure otherwise.
///
/// # Safety
/// `host` must be null or valid for the rest of the process; `instance_out` must be valid for a
/// write; `error` must point at a valid host sink.
unsafe fn instantiate<S: Service>(
    host: *const HostApi,
    instance_out: *mut *mut c_void,
    error: *const WriteSink,
    refusals: bool,
    make: impl FnOnce(Host) -> Result<S, crate::Error>,
) -> i32 {
    // SAFETY: the caller passes a valid sink (this function's contract).
    let error = unsafe { &*error };
    // SAFETY: the caller keeps `host` valid for the rest of the process (the `HostApi`
    // contract), so every copy the service keeps of this `Host` stays usable.
    let host = unsafe { Host::from_raw(host) };
    let refusal_status =
        if host.max_status() >= STATUS_REFUSED { STATUS_REFUSED } else { STATUS_ERROR };
    match catch_unwind(AssertUnwindSafe(|| make(host))) {
        Ok(Ok(service)) => {
            let instance = Instance { service, refusal_status };
            let instance = Box::into_raw(Box::new(instance)).cast::<c_void>();
            // SAFETY: the caller passes a pointer valid for a write (this function's contract).
            unsafe { instance_out.write(instance) };
            STATUS_OK
        }
        Ok(Err(e)) if refusals && e.is_refusal() => report(error, refusal_status, e.message()),
        Ok(Err(e)) => report(error, STATUS_ERROR, e.message()),
        Err(payload) => report_panic(error, payload),
    }
}

/// `CallFn` for `S`.
///
/// # Safety
/// `instance` must come from `create::<S>` and not be destroyed yet; `method` and `input` must
/// describe valid memory for the call; `output` and `error` must point at valid host sinks.
pub(crate) unsafe extern "C" fn call<S: Service>(
    instance: *mut c_void,
    method: RawStr,
    input: RawBytes,
    output: *const WriteSink,
    error: *const WriteSink,
) -> i32 {
    // SAFETY: the caller vouches that `method` stays valid for this call.
    let method = unsafe { method.as_bytes() };
    // SAFETY: forwarded from this function's contract.
    unsafe {
        answer::<S>(instance, input, output, error, |service, input, output| {
            let method = std::str::from_utf8(method)
                .map_err(|_| crate::Error::new("method name is not valid UTF-8"))?;
            service.call(method, input, output)
        })
    }
}

/// `CallFn` for `S` exported with the typed interface `I`: the name is mapped to the method's
/// id and the call goes through the interface's glue, as a typed call does.
///
/// # Safety
/// As for [`call`].
pub(crate) unsafe extern "C" fn call_named<S: Service, I: ?Sized + Serve<S>>(
    instance: *mut c_void,
    method: RawStr,
    input: RawBytes,
    output: *const WriteSink,
    error: *const WriteSink,
) -> i32 {
    // SAFETY: the caller vouches that `method` stays valid for this call.
    let method = unsafe { method.as_bytes() };
    // SAFETY: forwarded from this function's contract.
    unsafe {
        answer::<S>(instance, input, output, error, |service, input, output| {
            let method = std::str::from_utf8(method)
                .map_err(|_| crate::Error::new("method name is not valid UTF-8"))?;
            match crate::typed::method_id(I::METHODS, method) {
                Some(id) => I::dispatch(service, id, input, output),
                None => Err(crate::Error::unknown_method(method)),
            }
        })
    }
}

/// `CallMethodFn` for `S` exported with the typed interface `I`.
///
/// # Safety
/// As for [`call`].
pub(crate) unsafe extern "C" fn call_method<S: Service, I: ?Sized + Serve<S>>(
    instance: *mut c_void,
    method: u32,
    input: RawBytes,
    output: *const WriteSink,
    error: *const WriteSink,
) -> i32 {
    // SAFETY: forwarded from this function's contract.
    unsafe {
        answer::<S>(instance, input, output, error, |service, input, output| {
            I::dispatch(service, method, input, output)
        })
    }
}

/// Runs `handle` on the instance with the call's input and output, catching a panic, and turns
/// its outcome into a status.
///
/// # Safety
/// `instance` must come from `create::<S>` (or `import_state::<S>`) and not be destroyed yet;
/// `input` must describe valid memory for the call; `output` and `error` must point at valid
/// host sinks.
#[inline(always)]
unsafe fn answer<S: Service>(
    instance: *mut c_void,
    input: RawBytes,
    output: *const WriteSink,
    error: *const WriteSink,
    handle: impl FnOnce(&S, &[u8], &mut Output<'_>) -> Result<(), crate::Error>,
) -> i32 {
    // SAFETY: both sinks are valid for the call (this function's contract).
    let (output, error) = unsafe { (&*output, &*error) };
    // SAFETY: `instance` is a live `Box<Instance<S>>` from `create::<S>`; calls only take a
    // shared reference, and `S: Sync` makes concurrent shared access sound.
    let instance = unsafe { &*instance.cast::<Instance<S>>() };
    // SAFETY: the caller vouches that `input` stays valid for this call.
    let input = unsafe { input.as_slice() };
    // SAFETY: `output` is a host sink valid for this call.
    let mut output = unsafe { Output::from_sink(output) };
    match catch_unwind(AssertUnwindSafe(|| handle(&instance.service, input, &mut output))) {
        Ok(Ok(())) => STATUS_OK,
        Ok(Err(e)) => match e.provenance() {
            // A failed call to another service, passed on: hand its record back to the host.
            Some(record) => {
                let _ = write_to_sink(error, record);
                STATUS_DEPENDENCY
            }
            None => report(error, instance.status_of(&e), e.message()),
        },
        Err(payload) => report_panic(error, payload),
    }
}

/// `HealthFn` for `S`.
///
/// # Safety
/// `instance` must come from `create::<S>` and not be destroyed yet; `error` must point at a
/// valid host sink.
pub(crate) unsafe extern "C" fn health<S: Service>(
    instance: *mut c_void,
    error: *const WriteSink,
) -> i32 {
    // SAFETY: the sink is valid for the call (this function's contract).
    let error = unsafe { &*error };
    // SAFETY: as in `call`: a live `Box<Instance<S>>`, shared access only.
    let service = unsafe { &(*instance.cast::<Instance<S>>()).service };
    // A health check has no caller whose problem a refusal could be: any error is a failure.
    match catch_unwind(AssertUnwindSafe(|| service.health())) {
        Ok(Ok(())) => STATUS_OK,
        Ok(Err(e)) => report(error, STATUS_ERROR, e.message()),
        Err(payload) => report_panic(error, payload),
    }
}

/// `ExportStateFn` for `S`.
///
/// # Safety
/// `instance` must come from `create::<S>` or `import_state::<S>` and not be destroyed yet;
/// `state` and `error` must point at valid host sinks.
pub(crate) unsafe extern "C" fn export_state<S: Stateful>(
    instance: *mut c_void,
    state: *const WriteSink,
    error: *const WriteSink,
) -> i32 {
    // SAFETY: both sinks are valid for the call (this function's contract).
    let (state, error) = unsafe { (&*state, &*error) };
    // SAFETY: as in `call`: a live `Box<Instance<S>>`, shared access only.
    let service = unsafe { &(*instance.cast::<Instance<S>>()).service };
    // SAFETY: `state` is a host sink valid for this call.
    let mut state = unsafe { Output::from_sink(state) };
    // The host asked for the state to hand it on: an error here is the service's failure.
    match catch_unwind(AssertUnwindSafe(|| service.export_state(&mut state))) {
        Ok(Ok(())) => STATUS_OK,
        Ok(Err(e)) => report(error, STATUS_ERROR, e.message()),
        Err(payload) => report_panic(error, payload),
    }
}

/// `DestroyFn` for `S`.
///
/// # Safety
/// `instance` must come from `create::<S>`, and no call into it may be running or start later;
/// `error` must point at a valid host sink.
pub(crate) unsafe extern "C" fn destroy<S: Service>(
    instance: *mut c_void,
    error: *const WriteSink,
) -> i32 {
    // SAFETY: the sink is valid for the call (this function's contract).
    let error = unsafe { &*error };
    // SAFETY: `instance` is the `Box<Instance<S>>` leaked by `create::<S>`, and the caller
    // guarantees nothing uses it any more, so taking ownership back is sound.
    let service = unsafe { Box::from_raw(instance.cast::<Instance<S>>()) };
    match catch_unwind(AssertUnwindSafe(move || drop(service))) {
        Ok(()) => STATUS_OK,
        Err(payload) => report_panic(error, payload),
    }
}

fn report(error: &WriteSink, status: i32, message: &str) -> i32 {
    // If the host cannot take the message it still gets the status, which is what matters.
    let _ = write_to_sink(error, message.as_bytes());
    status
}

fn report_panic(error: &WriteSink, payload: Box<dyn Any + Send>) -> i32 {
    let status = {
        let message = panic_message(payload.as_ref());
        report(error, STATUS_PANIC, message)
    };
    // Dropping the payload runs its destructor, which could panic in turn; a payload of that
    // second panic is leaked rather than dropped, so nothing can unwind out of here.
    if let Err(again) = catch_unwind(AssertUnwindSafe(move || drop(payload))) {
        std::mem::forget(again);
    }
    status
}

fn panic_message(payload: &(dyn Any + Send)) -> &str {
    if let Some(s) = payload.downcast_ref::<&'static str>() {
        s
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s
    } else {
        "panic with a non-string payload"
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::abi::STATUS_REFUSED;
    use crate::{Error, Output};

    struct Echo;

    impl Service for Echo {
        fn create(_host: Host) -> Result<Self, Error> {
            Ok(Echo)
        }

        fn call(&self, method: &str, input: &[u8], output: &mut Output<'_>) -> Result<(), Error> {
            match method {
                "echo" => Ok(output.write(input)?),
                "fail" => Err(Error::new("failed on purpose")),
                "panic" => panic!("panicked on purpose: {}", input.len()),
                "panic-static" => std::panic::panic_any(7u32),
                "missing" => Err(Error::not_found("key `k`")),
                _ => Err(Error::unknown_method(method)),
            }
        }

        fn health(&self) -> Result<(), Error> {
            Err(Error::new("unwell"))
        }
    }

    fn new_echo() -> *mut c_void {
        new_echo_on(std::ptr::null())
    }

    fn new_echo_on(host: *const HostApi) -> *mut c_void {
        let mut instance = std::ptr::null_mut();
        let mut error = Vec::new();
        // SAFETY: `host` is null or a table that outlives the instance; the out pointer and the
        // sink are valid for the call.
        let status =
            unsafe { create::<Echo>(host, &mut instance, &WriteSink::for_vec(&mut error)) };
        assert_eq!(status, STATUS_OK);
        assert!(!instance.is_null());
        instance
    }

    fn call_echo(instance: *mut c_void, method: &str, input: &[u8]) -> (i32, Vec<u8>, String) {
        let (mut output, mut error) = (Vec::new(), Vec::new());
        // SAFETY: `instance` is a live Echo from `new_echo`; everything else is valid for the call.
        let status = unsafe {
            call::<Echo>(
                instance,
                RawStr::new(method),
                RawBytes::new(input),
                &WriteSink::for_vec(&mut output),
                &WriteSink::for_vec(&mut error),
            )
        };
        (status, output, String::from_utf8(error).unwrap())
    }

    fn destroy_echo(instance: *mut c_void) {
        let mut error = Vec::new();
        // SAFETY: `instance` is a live Echo and nothing uses it after this.
        let status = unsafe { destroy::<Echo>(instance, &WriteSink::for_vec(&mut error)) };
        assert_eq!(status, STATUS_OK);
    }

    #[test]
    fn answers_errors_and_panics_come_back_as_statuses() {
        let instance = new_echo();
        assert_eq!(
            call_echo(instance, "echo", b"abc"),
            (STATUS_OK, b"abc".to_vec(), String::new())
        );
        assert_eq!(
            call_echo(instance, "fail", b""),
            (STATUS_ERROR, Vec::new(), "failed on purpose".to_owned())
        );
        assert_eq!(
            call_echo(instance, "panic", b"four"),
            (STATUS_PANIC, Vec::new(), "panicked on purpose: 4".to_owned())
        );
        assert_eq!(
            call_echo(instance, "panic-static", b""),
            (STATUS_PANIC, Vec::new(), "panic with a non-string payload".to_owned())
        );
        assert_eq!(call_echo(instance, "echo", b"still here").0, STATUS_OK);
        destroy_echo(instance);
    }

    unsafe extern "C" fn no_log(_: *const c_void, _: u32, _: *const u8, _: usize) {}

    unsafe extern "C" fn no_call(
        _: *const c_void,
        _: RawStr,
        _: RawStr,
        _: RawBytes,
        _: *const WriteSink,
        _: *const WriteSink,
    ) -> i32 {
        STATUS_ERROR
    }

    fn host_table(max_status: i32) -> HostApi {
        HostApi {
            size: std::mem::size_of::<HostApi>(),
            ctx: std::ptr::null(),
            service: RawStr::new("echo"),
            version: RawStr::new("1.0.0"),
            log: no_log,
            call_service: no_call,
            max_status,
        }
    }

    #[test]
    fn a_refusal_is_its_own_status_for_a_host_that_knows_it() {
        let host = host_table(STATUS_REFUSED);
        let instance = new_echo_on(&host);
        assert_eq!(
            call_echo(instance, "missing", b""),
            (STATUS_REFUSED, Vec::new(), "not found: key `k`".to_owned())
        );
        assert_eq!(
            call_echo(instance, "frob", b""),
            (STATUS_REFUSED, Vec::new(), "unknown method `frob`".to_owned())
        );
        assert_eq!(call_echo(instance, "fail", b"").0, STATUS_ERROR);
        destroy_echo(instance);
    }

    #[test]
    fn a_refusal_is_an_error_status_for_an_older_host() {
        // A host whose table predates `max_status` (0: not provided), and no host at all.
        let host = host_table(0);
        for instance in [new_echo_on(&host), new_echo()] {
            assert_eq!(
                call_echo(instance, "missing", b""),
                (STATUS_ERROR, Vec::new(), "not found: key `k`".to_owned())
            );
            destroy_echo(instance);
        }
    }

    #[test]
    fn a_method_name_that_is_not_utf8_is_an_error() {
        let instance = new_echo();
        let (mut output, mut error) = (Vec::new(), Vec::new());
        let bad = [0xffu8, 0xfe];
        // SAFETY: as in `call_echo`; the method bytes are valid memory, just not UTF-8.
        let status = unsafe {
            call::<Echo>(
                instance,
                RawStr { ptr: bad.as_ptr(), len: bad.len() },
                RawBytes::new(b""),
                &WriteSink::for_vec(&mut output),
                &WriteSink::for_vec(&mut error),
            )
        };
        assert_eq!(status, STATUS_ERROR);
        assert_eq!(error, b"method name is not valid UTF-8");
        destroy_echo(instance);
    }

    #[test]
    fn a_failing_health_check_reports_its_message() {
        let instance = new_echo();
        let mut error = Vec::new();
        // SAFETY: `instance` is a live Echo; the sink is valid for the call.
        let status = unsafe { health::<Echo>(instance, &WriteSink::for_vec(&mut error)) };
        assert_eq!((status, error.as_slice()), (STATUS_ERROR, &b"unwell"[..]));
        destroy_echo(instance);
    }
}
