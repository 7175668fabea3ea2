//! The C entry points of the module: the only place `unsafe` is allowed.
//!
//! Decides: how each `C_*` function reads its arguments (through
//! `convert`, which checks every pointer), calls the safe [`Token`], and
//! writes its answer; that a panic never crosses into C (it becomes
//! `CKR_GENERAL_ERROR`); that the module is one global token between
//! `C_Initialize` and `C_Finalize`; and where the AES-GCM IV goes back.
//! The safety contract of every function is the PKCS#11 2.40 one: pointers
//! the caller passes are valid for the lengths it passes.
#![allow(unsafe_code)]
#![allow(non_snake_case)]
#![allow(clippy::missing_safety_doc)]

pub mod convert;

use crate::config::Config;
use crate::error::{Error, Result};
use crate::mechanism::OFFERED;
use crate::objects::AttrValue;
use crate::token::{Out, Token};
use cryptoki_sys::*;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{Arc, OnceLock, RwLock};

/// The token between `C_Initialize` and `C_Finalize`, with the id of the
/// process that initialised it. A child made by `fork()` inherits it
/// without the runtime's threads: there it counts as not initialised, and
/// its `C_Initialize` starts afresh.
static TOKEN: RwLock<Option<(u32, Arc<Token>)>> = RwLock::new(None);

static LOGGING: OnceLock<()> = OnceLock::new();

fn token() -> Result<Arc<Token>> {
    match &*TOKEN.read().map_err(|_| Error::Failed("lock".into()))? {
        Some((pid, t)) if *pid == std::process::id() => Ok(t.clone()),
        _ => Err(Error::NotInitialized),
    }
}

/// Takes the token out, if this process initialised it. One inherited
/// from a parent is forgotten, never dropped: dropping would wait on a
/// runtime whose threads exist only in the parent.
fn take_token(slot: &mut Option<(u32, Arc<Token>)>) -> Option<Arc<Token>> {
    match slot.take() {
        Some((pid, t)) if pid == std::process::id() => Some(t),
        Some(inherited) => {
            std::mem::forget(inherited);
            None
        }
        None => None,
    }
}

/// Runs one entry point: its errors become their `CK_RV`, a panic
/// `CKR_GENERAL_ERROR`.
fn run(function: &'static str, f: impl FnOnce() -> Result<CK_RV>) -> CK_RV {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(Ok(rv)) => rv,
        Ok(Err(e)) => {
            if e.is_fault() {
                tracing::warn!(function, error = %e, "failed");
            } else {
                tracing::debug!(function, error = %e, "refused");
            }
            e.rv()
        }
        Err(_) => {
            tracing::error!(function, "panic inside the module");
            CKR_GENERAL_ERROR
        }
    }
}

fn ok(r: Result<()>) -> Result<CK_RV> {
    r.map(|()| CKR_OK)
}

// ----- general ------------------------------------------------------------

pub unsafe extern "C" fn C_Initialize(args: *mut std::os::raw::c_void) -> CK_RV {
    run("C_Initialize", || {
        if !args.is_null() {
            // SAFETY: a non-NULL argument is a CK_C_INITIALIZE_ARGS.
            let a = unsafe { std::ptr::read_unaligned(args as *const CK_C_INITIALIZE_ARGS) };
            if !a.pReserved.is_null() {
                return Err(Error::ArgumentsBad("pReserved must be NULL"));
            }
            let given = [
                a.CreateMutex.is_some(),
                a.DestroyMutex.is_some(),
                a.LockMutex.is_some(),
                a.UnlockMutex.is_some(),
            ];
            if given.iter().any(|g| *g) && !given.iter().all(|g| *g) {
                return Err(Error::ArgumentsBad("all four mutex functions or none"));
            }
            // The module locks with the operating system's primitives; it
            // cannot use the application's.
            if given[0] && a.flags & CKF_OS_LOCKING_OK == 0 {
                return Err(Error::CantLock);
            }
            // CKF_LIBRARY_CANT_CREATE_OS_THREADS (p11-kit and GnuTLS set
            // it) is not refused: the module's two runtime threads never
            // call back into the application, which is what the flag
            // protects, and without them it cannot talk to the proxy.
        }
        let mut slot = TOKEN.write().map_err(|_| Error::Failed("lock".into()))?;
        if matches!(&*slot, Some((pid, _)) if *pid == std::process::id()) {
            return Err(Error::AlreadyInitialized);
        }
        take_token(&mut slot);
        let cfg = Config::load();
        // Logging first, so that a configuration error is reported (by
        // `run`) on standard error.
        let filter = match &cfg {
            Ok(c) => c.log.clone(),
            Err(_) => std::env::var("HSM_PKCS11_LOG").unwrap_or_else(|_| "warn".into()),
        };
        LOGGING.get_or_init(|| {
            let filter = tracing_subscriber::EnvFilter::try_new(&filter)
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
            let _ = tracing_subscriber::fmt()
                .with_env_filter(filter)
                .with_writer(std::io::stderr)
                .try_init();
        });
        *slot = Some((std::process::id(), Arc::new(Token::new(cfg?)?)));
        Ok(CKR_OK)
    })
}

pub unsafe extern "C" fn C_Finalize(reserved: *mut std::os::raw::c_void) -> CK_RV {
    run("C_Finalize", || {
        if !reserved.is_null() {
            return Err(Error::ArgumentsBad("pReserved must be NULL"));
        }
        let mut slot = TOKEN.write().map_err(|_| Error::Failed("lock".into()))?;
        let t = take_token(&mut slot).ok_or(Error::NotInitialized)?;
        drop(slot);
        let _ = t.close_all_sessions(t.cfg.slot_id);
        Ok(CKR_OK)
    })
}

pub unsafe extern "C" fn C_GetInfo(info: *mut CK_INFO) -> CK_RV {
    run("C_GetInfo", || {
        token()?;
        if info.is_null() {
            return Err(Error::ArgumentsBad("NULL info"));
        }
        let i = CK_INFO {
            cryptokiVersion: CK_VERSION {
                major: 2,
                minor: 40,
            },
            manufacturerID: convert::pad("hsm-ha"),
            flags: 0,
            libraryDescription: convert::pad("hsm-ha PKCS#11 module"),
            libraryVersion: library_version(),
        };
        // SAFETY: non-NULL, a CK_INFO the caller owns.
        unsafe { std::ptr::write_unaligned(info, i) };
        Ok(CKR_OK)
    })
}

fn library_version() -> CK_VERSION {
    let v = |s: &str| s.parse::<u8>().unwrap_or(0);
    CK_VERSION {
        major: v(env!("CARGO_PKG_VERSION_MAJOR")),
        minor: v(env!("CARGO_PKG_VERSION_MINOR")),
    }
}

#[no_mangle]
pub unsafe extern "C" fn C_GetFunctionList(list: *mut *mut CK_FUNCTION_LIST) -> CK_RV {
    run("C_GetFunctionList", || {
        if list.is_null() {
            return Err(Error::ArgumentsBad("NULL list pointer"));
        }
        // SAFETY: non-NULL; the list is a static the caller only reads.
        unsafe { *list = &FUNCTION_LIST as *const CK_FUNCTION_LIST as *mut CK_FUNCTION_LIST };
        Ok(CKR_OK)
    })
}

// ----- slot and token -----------------------------------------------------

pub unsafe extern "C" fn C_GetSlotList(
    _present: CK_BBOOL,
    list: *mut CK_SLOT_ID,
    count: *mut CK_ULONG,
) -> CK_RV {
    run("C_GetSlotList", || {
        let t = token()?;
        if count.is_null() {
            return Err(Error::ArgumentsBad("NULL count"));
        }
        if list.is_null() {
            // SAFETY: non-NULL count.
            unsafe { *count = 1 };
            return Ok(CKR_OK);
        }
        // SAFETY: non-NULL count; the list holds `*count` entries.
        unsafe {
            if *count < 1 {
                *count = 1;
                return Ok(CKR_BUFFER_TOO_SMALL);
            }
            *list = t.cfg.slot_id;
            *count = 1;
        }
        Ok(CKR_OK)
    })
}

pub unsafe extern "C" fn C_GetSlotInfo(slot: CK_SLOT_ID, info: *mut CK_SLOT_INFO) -> CK_RV {
    run("C_GetSlotInfo", || {
        let t = token()?;
        t.check_slot(slot)?;
        if info.is_null() {
            return Err(Error::ArgumentsBad("NULL info"));
        }
        let i = CK_SLOT_INFO {
            slotDescription: convert::pad(&format!("hsm-ha virtual partition {}", t.cfg.url)),
            manufacturerID: convert::pad("hsm-ha"),
            flags: CKF_TOKEN_PRESENT | CKF_HW_SLOT,
            hardwareVersion: library_version(),
            firmwareVersion: library_version(),
        };
        // SAFETY: non-NULL, a CK_SLOT_INFO the caller owns.
        unsafe { std::ptr::write_unaligned(info, i) };
        Ok(CKR_OK)
    })
}

pub unsafe extern "C" fn C_GetTokenInfo(slot: CK_SLOT_ID, info: *mut CK_TOKEN_INFO) -> CK_RV {
    run("C_GetTokenInfo", || {
        let t = token()?;
        t.check_slot(slot)?;
        if info.is_null() {
            return Err(Error::ArgumentsBad("NULL info"));
        }
        let (sessions, rw) = t.session_counts();
        let i = CK_TOKEN_INFO {
            label: convert::pad(&t.cfg.token_label),
            manufacturerID: convert::pad("hsm-ha"),
            model: convert::pad("virtual HA"),
            serialNumber: convert::pad(&t.cfg.serial()),
            flags: CKF_RNG | CKF_LOGIN_REQUIRED | CKF_USER_PIN_INITIALIZED | CKF_TOKEN_INITIALIZED,
            ulMaxSessionCount: CK_EFFECTIVELY_INFINITE,
            ulSessionCount: sessions as CK_ULONG,
            ulMaxRwSessionCount: CK_EFFECTIVELY_INFINITE,
            ulRwSessionCount: rw as CK_ULONG,
            ulMaxPinLen: 1024,
            ulMinPinLen: 1,
            ulTotalPublicMemory: CK_UNAVAILABLE_INFORMATION,
            ulFreePublicMemory: CK_UNAVAILABLE_INFORMATION,
            ulTotalPrivateMemory: CK_UNAVAILABLE_INFORMATION,
            ulFreePrivateMemory: CK_UNAVAILABLE_INFORMATION,
            hardwareVersion: library_version(),
            firmwareVersion: library_version(),
            utcTime: [b' '; 16],
        };
        // SAFETY: non-NULL, a CK_TOKEN_INFO the caller owns.
        unsafe { std::ptr::write_unaligned(info, i) };
        Ok(CKR_OK)
    })
}

pub unsafe extern "C" fn C_GetMechanismList(
    slot: CK_SLOT_ID,
    list: *mut CK_MECHANISM_TYPE,
    count: *mut CK_ULONG,
) -> CK_RV {
    run("C_GetMechanismList", || {
        token()?.check_slot(slot)?;
        if count.is_null() {
            return Err(Error::ArgumentsBad("NULL count"));
        }
        let n = OFFERED.len();
        // SAFETY: non-NULL count; the list holds `*count` entries.
        unsafe {
            if list.is_null() {
                *count = n as CK_ULONG;
                return Ok(CKR_OK);
            }
            if (*count as usize) < n {
                *count = n as CK_ULONG;
                return Ok(CKR_BUFFER_TOO_SMALL);
            }
            for (i, o) in OFFERED.iter().enumerate() {
                *list.add(i) = o.ckm;
            }
            *count = n as CK_ULONG;
        }
        Ok(CKR_OK)
    })
}

pub unsafe extern "C" fn C_GetMechanismInfo(
    slot: CK_SLOT_ID,
    ty: CK_MECHANISM_TYPE,
    info: *mut CK_MECHANISM_INFO,
) -> CK_RV {
    run("C_GetMechanismInfo", || {
        token()?.check_slot(slot)?;
        if info.is_null() {
            return Err(Error::ArgumentsBad("NULL info"));
        }
        let o = OFFERED
            .iter()
            .find(|o| o.ckm == ty)
            .ok_or(Error::MechanismInvalid(ty))?;
        let i = CK_MECHANISM_INFO {
            ulMinKeySize: o.min,
            ulMaxKeySize: o.max,
            flags: o.flags,
        };
        // SAFETY: non-NULL, a CK_MECHANISM_INFO the caller owns.
        unsafe { std::ptr::write_unaligned(info, i) };
        Ok(CKR_OK)
    })
}

// ----- sessions and login -------------------------------------------------

pub unsafe extern "C" fn C_OpenSession(
    slot: CK_SLOT_ID,
    flags: CK_FLAGS,
    _app: *mut std::os::raw::c_void,
    _notify: CK_NOTIFY,
    out: *mut CK_SESSION_HANDLE,
) -> CK_RV {
    run("C_OpenSession", || {
        let t = token()?;
        if out.is_null() {
            return Err(Error::ArgumentsBad("NULL session pointer"));
        }
        let h = t.open_session(slot, flags)?;
        // SAFETY: non-NULL, the caller's handle.
        unsafe { *out = h };
        Ok(CKR_OK)
    })
}

pub unsafe extern "C" fn C_CloseSession(h: CK_SESSION_HANDLE) -> CK_RV {
    run("C_CloseSession", || ok(token()?.close_session(h)))
}

pub unsafe extern "C" fn C_CloseAllSessions(slot: CK_SLOT_ID) -> CK_RV {
    run("C_CloseAllSessions", || {
        ok(token()?.close_all_sessions(slot))
    })
}

pub unsafe extern "C" fn C_GetSessionInfo(
    h: CK_SESSION_HANDLE,
    info: *mut CK_SESSION_INFO,
) -> CK_RV {
    run("C_GetSessionInfo", || {
        let t = token()?;
        if info.is_null() {
            return Err(Error::ArgumentsBad("NULL info"));
        }
        let s = t.session_info(h)?;
        let i = CK_SESSION_INFO {
            slotID: t.cfg.slot_id,
            state: s.state,
            flags: s.flags,
            ulDeviceError: 0,
        };
        // SAFETY: non-NULL, a CK_SESSION_INFO the caller owns.
        unsafe { std::ptr::write_unaligned(info, i) };
        Ok(CKR_OK)
    })
}

pub unsafe extern "C" fn C_Login(
    h: CK_SESSION_HANDLE,
    user: CK_USER_TYPE,
    pin: *mut CK_UTF8CHAR,
    len: CK_ULONG,
) -> CK_RV {
    run("C_Login", || {
        let t = token()?;
        // SAFETY: the PIN buffer of `len` bytes.
        let pin = unsafe { convert::bytes(pin, len) }?;
        ok(t.login(h, user, pin))
    })
}

pub unsafe extern "C" fn C_Logout(h: CK_SESSION_HANDLE) -> CK_RV {
    run("C_Logout", || ok(token()?.logout(h)))
}

// ----- objects ------------------------------------------------------------

pub unsafe extern "C" fn C_CreateObject(
    h: CK_SESSION_HANDLE,
    t: *mut CK_ATTRIBUTE,
    n: CK_ULONG,
    out: *mut CK_OBJECT_HANDLE,
) -> CK_RV {
    run("C_CreateObject", || {
        let tk = token()?;
        if out.is_null() {
            return Err(Error::ArgumentsBad("NULL object pointer"));
        }
        // SAFETY: the caller's template.
        let template = unsafe { convert::template(t, n) }?;
        let o = tk.create_object(h, template)?;
        // SAFETY: non-NULL.
        unsafe { *out = o };
        Ok(CKR_OK)
    })
}

pub unsafe extern "C" fn C_DestroyObject(h: CK_SESSION_HANDLE, o: CK_OBJECT_HANDLE) -> CK_RV {
    run("C_DestroyObject", || ok(token()?.destroy(h, o)))
}

pub unsafe extern "C" fn C_GetObjectSize(
    h: CK_SESSION_HANDLE,
    o: CK_OBJECT_HANDLE,
    size: *mut CK_ULONG,
) -> CK_RV {
    run("C_GetObjectSize", || {
        let t = token()?;
        if size.is_null() {
            return Err(Error::ArgumentsBad("NULL size"));
        }
        t.attributes(h, o, &[])?;
        // SAFETY: non-NULL.
        unsafe { *size = CK_UNAVAILABLE_INFORMATION };
        Ok(CKR_OK)
    })
}

pub unsafe extern "C" fn C_GetAttributeValue(
    h: CK_SESSION_HANDLE,
    o: CK_OBJECT_HANDLE,
    t: *mut CK_ATTRIBUTE,
    n: CK_ULONG,
) -> CK_RV {
    run("C_GetAttributeValue", || {
        let tk = token()?;
        if n > 0 && (t.is_null() || n > 4096) {
            return Err(Error::ArgumentsBad("template"));
        }
        let attrs: &mut [CK_ATTRIBUTE] = if n == 0 {
            &mut []
        } else {
            // SAFETY: non-NULL, `n` attributes the caller owns.
            unsafe { std::slice::from_raw_parts_mut(t, n as usize) }
        };
        let types: Vec<CK_ATTRIBUTE_TYPE> = attrs.iter().map(|a| a.type_).collect();
        let values = tk.attributes(h, o, &types)?;
        let mut rv = CKR_OK;
        for (a, v) in attrs.iter_mut().zip(values) {
            match v {
                AttrValue::Bytes(b) => {
                    if a.pValue.is_null() {
                        a.ulValueLen = b.len() as CK_ULONG;
                    } else if (a.ulValueLen as usize) < b.len() {
                        a.ulValueLen = CK_UNAVAILABLE_INFORMATION;
                        rv = CKR_BUFFER_TOO_SMALL;
                    } else {
                        // SAFETY: the caller's buffer holds `ulValueLen`
                        // bytes, at least `b.len()`.
                        unsafe {
                            std::ptr::copy_nonoverlapping(b.as_ptr(), a.pValue as *mut u8, b.len())
                        };
                        a.ulValueLen = b.len() as CK_ULONG;
                    }
                }
                AttrValue::Sensitive => {
                    a.ulValueLen = CK_UNAVAILABLE_INFORMATION;
                    if rv == CKR_OK {
                        rv = CKR_ATTRIBUTE_SENSITIVE;
                    }
                }
                AttrValue::Invalid => {
                    a.ulValueLen = CK_UNAVAILABLE_INFORMATION;
                    if rv == CKR_OK {
                        rv = CKR_ATTRIBUTE_TYPE_INVALID;
                    }
                }
            }
        }
        Ok(rv)
    })
}

pub unsafe extern "C" fn C_SetAttributeValue(
    h: CK_SESSION_HANDLE,
    o: CK_OBJECT_HANDLE,
    t: *mut CK_ATTRIBUTE,
    n: CK_ULONG,
) -> CK_RV {
    run("C_SetAttributeValue", || {
        let tk = token()?;
        // SAFETY: the caller's template.
        let template = unsafe { convert::template(t, n) }?;
        ok(tk.set_attributes(h, o, template))
    })
}

pub unsafe extern "C" fn C_FindObjectsInit(
    h: CK_SESSION_HANDLE,
    t: *mut CK_ATTRIBUTE,
    n: CK_ULONG,
) -> CK_RV {
    run("C_FindObjectsInit", || {
        let tk = token()?;
        // SAFETY: the caller's template.
        let template = unsafe { convert::template(t, n) }?;
        ok(tk.find_init(h, template))
    })
}

pub unsafe extern "C" fn C_FindObjects(
    h: CK_SESSION_HANDLE,
    out: *mut CK_OBJECT_HANDLE,
    max: CK_ULONG,
    count: *mut CK_ULONG,
) -> CK_RV {
    run("C_FindObjects", || {
        let t = token()?;
        if count.is_null() || (out.is_null() && max > 0) {
            return Err(Error::ArgumentsBad("NULL output"));
        }
        let found = t.find(h, max as usize)?;
        for (i, o) in found.iter().enumerate() {
            // SAFETY: the caller's array holds `max` handles; i < max.
            unsafe { *out.add(i) = *o };
        }
        // SAFETY: non-NULL.
        unsafe { *count = found.len() as CK_ULONG };
        Ok(CKR_OK)
    })
}

pub unsafe extern "C" fn C_FindObjectsFinal(h: CK_SESSION_HANDLE) -> CK_RV {
    run("C_FindObjectsFinal", || ok(token()?.find_final(h)))
}

// ----- encryption ---------------------------------------------------------

unsafe fn crypt_init(
    name: &'static str,
    h: CK_SESSION_HANDLE,
    m: *mut CK_MECHANISM,
    k: CK_OBJECT_HANDLE,
    encrypt: bool,
) -> CK_RV {
    run(name, || {
        let t = token()?;
        // SAFETY: the caller's mechanism.
        let (mech, iv) = unsafe { convert::mechanism(m) }?;
        t.crypt_init(h, &mech, k, encrypt, iv)?;
        Ok(CKR_OK)
    })
}

unsafe fn crypt(
    name: &'static str,
    h: CK_SESSION_HANDLE,
    data: Option<(*mut u8, CK_ULONG)>,
    out: *mut u8,
    out_len: *mut CK_ULONG,
    encrypt: bool,
) -> CK_RV {
    run(name, || {
        let t = token()?;
        let input = match data {
            // SAFETY: the caller's input buffer.
            Some((p, n)) => Some(unsafe { convert::bytes(p, n) }?),
            None => None,
        };
        // SAFETY: the caller's output buffer and its length.
        let cap = unsafe { convert::capacity(out, out_len) }?;
        let result = t.crypt(h, input, cap, encrypt)?;
        let rv = match &result {
            Out::Len(n) => Out::Len(*n),
            Out::TooSmall(n) => Out::TooSmall(*n),
            Out::Done(c) => {
                match (&c.iv, c.iv_target) {
                    (None, None) => {}
                    (Some(iv), Some(t)) if t.len >= iv.len() && t.addr != 0 => {
                        // SAFETY: the caller's pIv buffer given to this
                        // session's C_EncryptInit, `t.len` bytes, which the
                        // caller keeps valid until the encryption ends (this
                        // call): the contract `gcm_iv_write_back = true`
                        // states (docs/PKCS11.md); the token layer checked
                        // `t.len >= 12` at init and keeps the address with
                        // the operation, never across operations.
                        unsafe {
                            std::ptr::copy_nonoverlapping(iv.as_ptr(), t.addr as *mut u8, iv.len())
                        };
                    }
                    _ => {
                        return Err(Error::Failed(
                            "the partition's IV and the caller's IV buffer do not pair".into(),
                        ))
                    }
                }
                Out::Done(c.data.as_slice())
            }
        };
        // SAFETY: checked by `capacity` above.
        Ok(unsafe { convert::put(rv, out, out_len) })
    })
}

unsafe fn crypt_update(
    name: &'static str,
    h: CK_SESSION_HANDLE,
    p: *mut u8,
    n: CK_ULONG,
    out: *mut u8,
    out_len: *mut CK_ULONG,
    encrypt: bool,
) -> CK_RV {
    run(name, || {
        let t = token()?;
        if out_len.is_null() {
            return Err(Error::ArgumentsBad("NULL length pointer"));
        }
        // SAFETY: the caller's input buffer.
        let part = unsafe { convert::bytes(p, n) }?;
        t.crypt_update(h, part, encrypt, out.is_null())?;
        // Parts are gathered and sent whole at the end: no output yet.
        // SAFETY: non-NULL.
        unsafe { *out_len = 0 };
        Ok(CKR_OK)
    })
}

pub unsafe extern "C" fn C_EncryptInit(
    h: CK_SESSION_HANDLE,
    m: *mut CK_MECHANISM,
    k: CK_OBJECT_HANDLE,
) -> CK_RV {
    unsafe { crypt_init("C_EncryptInit", h, m, k, true) }
}
pub unsafe extern "C" fn C_Encrypt(
    h: CK_SESSION_HANDLE,
    d: *mut CK_BYTE,
    n: CK_ULONG,
    out: *mut CK_BYTE,
    out_len: *mut CK_ULONG,
) -> CK_RV {
    unsafe { crypt("C_Encrypt", h, Some((d, n)), out, out_len, true) }
}
pub unsafe extern "C" fn C_EncryptUpdate(
    h: CK_SESSION_HANDLE,
    d: *mut CK_BYTE,
    n: CK_ULONG,
    out: *mut CK_BYTE,
    out_len: *mut CK_ULONG,
) -> CK_RV {
    unsafe { crypt_update("C_EncryptUpdate", h, d, n, out, out_len, true) }
}
pub unsafe extern "C" fn C_EncryptFinal(
    h: CK_SESSION_HANDLE,
    out: *mut CK_BYTE,
    out_len: *mut CK_ULONG,
) -> CK_RV {
    unsafe { crypt("C_EncryptFinal", h, None, out, out_len, true) }
}
pub unsafe extern "C" fn C_DecryptInit(
    h: CK_SESSION_HANDLE,
    m: *mut CK_MECHANISM,
    k: CK_OBJECT_HANDLE,
) -> CK_RV {
    unsafe { crypt_init("C_DecryptInit", h, m, k, false) }
}
pub unsafe extern "C" fn C_Decrypt(
    h: CK_SESSION_HANDLE,
    d: *mut CK_BYTE,
    n: CK_ULONG,
    out: *mut CK_BYTE,
    out_len: *mut CK_ULONG,
) -> CK_RV {
    unsafe { crypt("C_Decrypt", h, Some((d, n)), out, out_len, false) }
}
pub unsafe extern "C" fn C_DecryptUpdate(
    h: CK_SESSION_HANDLE,
    d: *mut CK_BYTE,
    n: CK_ULONG,
    out: *mut CK_BYTE,
    out_len: *mut CK_ULONG,
) -> CK_RV {
    unsafe { crypt_update("C_DecryptUpdate", h, d, n, out, out_len, false) }
}
pub unsafe extern "C" fn C_DecryptFinal(
    h: CK_SESSION_HANDLE,
    out: *mut CK_BYTE,
    out_len: *mut CK_ULONG,
) -> CK_RV {
    unsafe { crypt("C_DecryptFinal", h, None, out, out_len, false) }
}

// ----- digests ------------------------------------------------------------

pub unsafe extern "C" fn C_DigestInit(h: CK_SESSION_HANDLE, m: *mut CK_MECHANISM) -> CK_RV {
    run("C_DigestInit", || {
        let t = token()?;
        // SAFETY: the caller's mechanism.
        let (mech, _) = unsafe { convert::mechanism(m) }?;
        ok(t.digest_init(h, &mech))
    })
}

/// A function answering bytes under the two-call convention (`C_Digest`,
/// `C_Sign` and their `Final`): reads the input (if any) and the output
/// buffer, runs `op`, writes the answer.
unsafe fn bytes_out(
    name: &'static str,
    h: CK_SESSION_HANDLE,
    data: Option<(*mut u8, CK_ULONG)>,
    out: *mut u8,
    out_len: *mut CK_ULONG,
    op: impl FnOnce(&Token, CK_SESSION_HANDLE, Option<&[u8]>, Option<usize>) -> Result<Out<Vec<u8>>>,
) -> CK_RV {
    run(name, || {
        let t = token()?;
        let input = match data {
            // SAFETY: the caller's input buffer.
            Some((p, n)) => Some(unsafe { convert::bytes(p, n) }?),
            None => None,
        };
        // SAFETY: the caller's output buffer and its length.
        let cap = unsafe { convert::capacity(out, out_len) }?;
        let r = op(&t, h, input, cap)?;
        // SAFETY: checked by `capacity`.
        Ok(unsafe { convert::put(as_slice(&r), out, out_len) })
    })
}

fn as_slice(o: &Out<Vec<u8>>) -> Out<&[u8]> {
    match o {
        Out::Len(n) => Out::Len(*n),
        Out::TooSmall(n) => Out::TooSmall(*n),
        Out::Done(v) => Out::Done(v.as_slice()),
    }
}

pub unsafe extern "C" fn C_Digest(
    h: CK_SESSION_HANDLE,
    d: *mut CK_BYTE,
    n: CK_ULONG,
    out: *mut CK_BYTE,
    out_len: *mut CK_ULONG,
) -> CK_RV {
    unsafe { bytes_out("C_Digest", h, Some((d, n)), out, out_len, Token::digest) }
}
pub unsafe extern "C" fn C_DigestUpdate(
    h: CK_SESSION_HANDLE,
    d: *mut CK_BYTE,
    n: CK_ULONG,
) -> CK_RV {
    run("C_DigestUpdate", || {
        let t = token()?;
        // SAFETY: the caller's input buffer.
        let part = unsafe { convert::bytes(d, n) }?;
        ok(t.digest_update(h, part))
    })
}
pub unsafe extern "C" fn C_DigestKey(_h: CK_SESSION_HANDLE, _k: CK_OBJECT_HANDLE) -> CK_RV {
    run("C_DigestKey", || Ok(CKR_KEY_INDIGESTIBLE))
}
pub unsafe extern "C" fn C_DigestFinal(
    h: CK_SESSION_HANDLE,
    out: *mut CK_BYTE,
    out_len: *mut CK_ULONG,
) -> CK_RV {
    unsafe { bytes_out("C_DigestFinal", h, None, out, out_len, Token::digest) }
}

// ----- signing and verifying ----------------------------------------------

pub unsafe extern "C" fn C_SignInit(
    h: CK_SESSION_HANDLE,
    m: *mut CK_MECHANISM,
    k: CK_OBJECT_HANDLE,
) -> CK_RV {
    run("C_SignInit", || {
        let t = token()?;
        // SAFETY: the caller's mechanism.
        let (mech, _) = unsafe { convert::mechanism(m) }?;
        ok(t.sign_init(h, &mech, k, false))
    })
}

pub unsafe extern "C" fn C_Sign(
    h: CK_SESSION_HANDLE,
    d: *mut CK_BYTE,
    n: CK_ULONG,
    out: *mut CK_BYTE,
    out_len: *mut CK_ULONG,
) -> CK_RV {
    unsafe { bytes_out("C_Sign", h, Some((d, n)), out, out_len, Token::sign) }
}
pub unsafe extern "C" fn C_SignUpdate(h: CK_SESSION_HANDLE, d: *mut CK_BYTE, n: CK_ULONG) -> CK_RV {
    run("C_SignUpdate", || {
        let t = token()?;
        // SAFETY: the caller's input buffer.
        let part = unsafe { convert::bytes(d, n) }?;
        ok(t.sign_update(h, part, false))
    })
}
pub unsafe extern "C" fn C_SignFinal(
    h: CK_SESSION_HANDLE,
    out: *mut CK_BYTE,
    out_len: *mut CK_ULONG,
) -> CK_RV {
    unsafe { bytes_out("C_SignFinal", h, None, out, out_len, Token::sign) }
}

pub unsafe extern "C" fn C_VerifyInit(
    h: CK_SESSION_HANDLE,
    m: *mut CK_MECHANISM,
    k: CK_OBJECT_HANDLE,
) -> CK_RV {
    run("C_VerifyInit", || {
        let t = token()?;
        // SAFETY: the caller's mechanism.
        let (mech, _) = unsafe { convert::mechanism(m) }?;
        ok(t.sign_init(h, &mech, k, true))
    })
}
pub unsafe extern "C" fn C_Verify(
    h: CK_SESSION_HANDLE,
    d: *mut CK_BYTE,
    n: CK_ULONG,
    s: *mut CK_BYTE,
    sn: CK_ULONG,
) -> CK_RV {
    run("C_Verify", || {
        let t = token()?;
        // SAFETY: the caller's data and signature buffers.
        let (data, sig) = unsafe { (convert::bytes(d, n)?, convert::bytes(s, sn)?) };
        ok(t.verify(h, Some(data), sig))
    })
}
pub unsafe extern "C" fn C_VerifyUpdate(
    h: CK_SESSION_HANDLE,
    d: *mut CK_BYTE,
    n: CK_ULONG,
) -> CK_RV {
    run("C_VerifyUpdate", || {
        let t = token()?;
        // SAFETY: the caller's input buffer.
        let part = unsafe { convert::bytes(d, n) }?;
        ok(t.sign_update(h, part, true))
    })
}
pub unsafe extern "C" fn C_VerifyFinal(
    h: CK_SESSION_HANDLE,
    s: *mut CK_BYTE,
    sn: CK_ULONG,
) -> CK_RV {
    run("C_VerifyFinal", || {
        let t = token()?;
        // SAFETY: the caller's signature buffer.
        let sig = unsafe { convert::bytes(s, sn) }?;
        ok(t.verify(h, None, sig))
    })
}

// ----- keys ---------------------------------------------------------------

pub unsafe extern "C" fn C_GenerateKey(
    h: CK_SESSION_HANDLE,
    m: *mut CK_MECHANISM,
    t: *mut CK_ATTRIBUTE,
    n: CK_ULONG,
    out: *mut CK_OBJECT_HANDLE,
) -> CK_RV {
    run("C_GenerateKey", || {
        let tk = token()?;
        if out.is_null() {
            return Err(Error::ArgumentsBad("NULL key pointer"));
        }
        // SAFETY: the caller's mechanism and template.
        let ((mech, _), template) = unsafe { (convert::mechanism(m)?, convert::template(t, n)?) };
        let k = tk.generate_key(h, &mech, template)?;
        // SAFETY: non-NULL.
        unsafe { *out = k };
        Ok(CKR_OK)
    })
}

pub unsafe extern "C" fn C_GenerateKeyPair(
    h: CK_SESSION_HANDLE,
    m: *mut CK_MECHANISM,
    pt: *mut CK_ATTRIBUTE,
    pn: CK_ULONG,
    qt: *mut CK_ATTRIBUTE,
    qn: CK_ULONG,
    public: *mut CK_OBJECT_HANDLE,
    private: *mut CK_OBJECT_HANDLE,
) -> CK_RV {
    run("C_GenerateKeyPair", || {
        let tk = token()?;
        if public.is_null() || private.is_null() {
            return Err(Error::ArgumentsBad("NULL key pointer"));
        }
        // SAFETY: the caller's mechanism and templates.
        let ((mech, _), pubt, privt) = unsafe {
            (
                convert::mechanism(m)?,
                convert::template(pt, pn)?,
                convert::template(qt, qn)?,
            )
        };
        let (p, q) = tk.generate_key_pair(h, &mech, pubt, privt)?;
        // SAFETY: both non-NULL.
        unsafe {
            *public = p;
            *private = q;
        }
        Ok(CKR_OK)
    })
}

pub unsafe extern "C" fn C_WrapKey(
    h: CK_SESSION_HANDLE,
    m: *mut CK_MECHANISM,
    wrapping: CK_OBJECT_HANDLE,
    key: CK_OBJECT_HANDLE,
    out: *mut CK_BYTE,
    out_len: *mut CK_ULONG,
) -> CK_RV {
    run("C_WrapKey", || {
        let t = token()?;
        // SAFETY: the caller's mechanism and output length.
        let ((mech, _), cap) =
            unsafe { (convert::mechanism(m)?, convert::capacity(out, out_len)?) };
        let wrapped = t.wrap(h, &mech, wrapping, key)?;
        let r = match cap {
            None => Out::Len(wrapped.len()),
            Some(c) if c < wrapped.len() => Out::TooSmall(wrapped.len()),
            Some(_) => Out::Done(wrapped.as_slice()),
        };
        // SAFETY: checked by `capacity`.
        Ok(unsafe { convert::put(r, out, out_len) })
    })
}

pub unsafe extern "C" fn C_UnwrapKey(
    h: CK_SESSION_HANDLE,
    m: *mut CK_MECHANISM,
    unwrapping: CK_OBJECT_HANDLE,
    w: *mut CK_BYTE,
    wn: CK_ULONG,
    t: *mut CK_ATTRIBUTE,
    n: CK_ULONG,
    out: *mut CK_OBJECT_HANDLE,
) -> CK_RV {
    run("C_UnwrapKey", || {
        let tk = token()?;
        if out.is_null() {
            return Err(Error::ArgumentsBad("NULL key pointer"));
        }
        // SAFETY: the caller's mechanism, wrapped key and template.
        let ((mech, _), wrapped, template) = unsafe {
            (
                convert::mechanism(m)?,
                convert::bytes(w, wn)?,
                convert::template(t, n)?,
            )
        };
        let k = tk.unwrap(h, &mech, unwrapping, wrapped, template)?;
        // SAFETY: non-NULL.
        unsafe { *out = k };
        Ok(CKR_OK)
    })
}

pub unsafe extern "C" fn C_DeriveKey(
    h: CK_SESSION_HANDLE,
    m: *mut CK_MECHANISM,
    base: CK_OBJECT_HANDLE,
    t: *mut CK_ATTRIBUTE,
    n: CK_ULONG,
    out: *mut CK_OBJECT_HANDLE,
) -> CK_RV {
    run("C_DeriveKey", || {
        let tk = token()?;
        if out.is_null() {
            return Err(Error::ArgumentsBad("NULL key pointer"));
        }
        // SAFETY: the caller's mechanism and template.
        let ((mech, _), template) = unsafe { (convert::mechanism(m)?, convert::template(t, n)?) };
        let k = tk.derive(h, &mech, base, template)?;
        // SAFETY: non-NULL.
        unsafe { *out = k };
        Ok(CKR_OK)
    })
}

// ----- random -------------------------------------------------------------

pub unsafe extern "C" fn C_SeedRandom(
    h: CK_SESSION_HANDLE,
    _p: *mut CK_BYTE,
    _n: CK_ULONG,
) -> CK_RV {
    run("C_SeedRandom", || {
        token()?.session_info(h)?;
        Err(Error::RandomSeedNotSupported)
    })
}

pub unsafe extern "C" fn C_GenerateRandom(
    h: CK_SESSION_HANDLE,
    p: *mut CK_BYTE,
    n: CK_ULONG,
) -> CK_RV {
    run("C_GenerateRandom", || {
        let t = token()?;
        if n == 0 {
            return Ok(CKR_OK);
        }
        if p.is_null() || n > isize::MAX as CK_ULONG {
            return Err(Error::ArgumentsBad("NULL or oversized buffer"));
        }
        let r = t.random(h, n as usize)?;
        // SAFETY: the caller's buffer of `n` bytes; `r` has exactly `n`.
        unsafe { std::ptr::copy_nonoverlapping(r.as_ptr(), p, r.len().min(n as usize)) };
        Ok(CKR_OK)
    })
}

// ----- not offered --------------------------------------------------------

/// Entry points of functions the module does not offer: each answers a
/// fixed code (after checking the module is initialised).
macro_rules! not_offered {
    ($($name:ident ( $($arg:ident : $ty:ty),* ) => $rv:expr;)+) => {
        $(
            pub unsafe extern "C" fn $name($($arg: $ty),*) -> CK_RV {
                $(let _ = $arg;)*
                run(stringify!($name), || {
                    token()?;
                    Ok($rv)
                })
            }
        )+
    };
}

not_offered! {
    C_InitToken(a: CK_SLOT_ID, b: *mut CK_UTF8CHAR, c: CK_ULONG, d: *mut CK_UTF8CHAR) => CKR_FUNCTION_NOT_SUPPORTED;
    C_InitPIN(a: CK_SESSION_HANDLE, b: *mut CK_UTF8CHAR, c: CK_ULONG) => CKR_FUNCTION_NOT_SUPPORTED;
    C_SetPIN(a: CK_SESSION_HANDLE, b: *mut CK_UTF8CHAR, c: CK_ULONG, d: *mut CK_UTF8CHAR, e: CK_ULONG) => CKR_FUNCTION_NOT_SUPPORTED;
    C_GetOperationState(a: CK_SESSION_HANDLE, b: *mut CK_BYTE, c: *mut CK_ULONG) => CKR_FUNCTION_NOT_SUPPORTED;
    C_SetOperationState(a: CK_SESSION_HANDLE, b: *mut CK_BYTE, c: CK_ULONG, d: CK_OBJECT_HANDLE, e: CK_OBJECT_HANDLE) => CKR_FUNCTION_NOT_SUPPORTED;
    C_CopyObject(a: CK_SESSION_HANDLE, b: CK_OBJECT_HANDLE, c: *mut CK_ATTRIBUTE, d: CK_ULONG, e: *mut CK_OBJECT_HANDLE) => CKR_FUNCTION_NOT_SUPPORTED;
    C_SignRecoverInit(a: CK_SESSION_HANDLE, b: *mut CK_MECHANISM, c: CK_OBJECT_HANDLE) => CKR_FUNCTION_NOT_SUPPORTED;
    C_SignRecover(a: CK_SESSION_HANDLE, b: *mut CK_BYTE, c: CK_ULONG, d: *mut CK_BYTE, e: *mut CK_ULONG) => CKR_FUNCTION_NOT_SUPPORTED;
    C_VerifyRecoverInit(a: CK_SESSION_HANDLE, b: *mut CK_MECHANISM, c: CK_OBJECT_HANDLE) => CKR_FUNCTION_NOT_SUPPORTED;
    C_VerifyRecover(a: CK_SESSION_HANDLE, b: *mut CK_BYTE, c: CK_ULONG, d: *mut CK_BYTE, e: *mut CK_ULONG) => CKR_FUNCTION_NOT_SUPPORTED;
    C_DigestEncryptUpdate(a: CK_SESSION_HANDLE, b: *mut CK_BYTE, c: CK_ULONG, d: *mut CK_BYTE, e: *mut CK_ULONG) => CKR_FUNCTION_NOT_SUPPORTED;
    C_DecryptDigestUpdate(a: CK_SESSION_HANDLE, b: *mut CK_BYTE, c: CK_ULONG, d: *mut CK_BYTE, e: *mut CK_ULONG) => CKR_FUNCTION_NOT_SUPPORTED;
    C_SignEncryptUpdate(a: CK_SESSION_HANDLE, b: *mut CK_BYTE, c: CK_ULONG, d: *mut CK_BYTE, e: *mut CK_ULONG) => CKR_FUNCTION_NOT_SUPPORTED;
    C_DecryptVerifyUpdate(a: CK_SESSION_HANDLE, b: *mut CK_BYTE, c: CK_ULONG, d: *mut CK_BYTE, e: *mut CK_ULONG) => CKR_FUNCTION_NOT_SUPPORTED;
    C_GetFunctionStatus(a: CK_SESSION_HANDLE) => CKR_FUNCTION_NOT_PARALLEL;
    C_CancelFunction(a: CK_SESSION_HANDLE) => CKR_FUNCTION_NOT_PARALLEL;
    C_WaitForSlotEvent(a: CK_FLAGS, b: *mut CK_SLOT_ID, c: *mut std::os::raw::c_void) => CKR_FUNCTION_NOT_SUPPORTED;
}

/// The function list `C_GetFunctionList` hands out.
static FUNCTION_LIST: CK_FUNCTION_LIST = CK_FUNCTION_LIST {
    version: CK_VERSION {
        major: 2,
        minor: 40,
    },
    C_Initialize: Some(C_Initialize),
    C_Finalize: Some(C_Finalize),
    C_GetInfo: Some(C_GetInfo),
    C_GetFunctionList: Some(C_GetFunctionList),
    C_GetSlotList: Some(C_GetSlotList),
    C_GetSlotInfo: Some(C_GetSlotInfo),
    C_GetTokenInfo: Some(C_GetTokenInfo),
    C_GetMechanismList: Some(C_GetMechanismList),
    C_GetMechanismInfo: Some(C_GetMechanismInfo),
    C_InitToken: Some(C_InitToken),
    C_InitPIN: Some(C_InitPIN),
    C_SetPIN: Some(C_SetPIN),
    C_OpenSession: Some(C_OpenSession),
    C_CloseSession: Some(C_CloseSession),
    C_CloseAllSessions: Some(C_CloseAllSessions),
    C_GetSessionInfo: Some(C_GetSessionInfo),
    C_GetOperationState: Some(C_GetOperationState),
    C_SetOperationState: Some(C_SetOperationState),
    C_Login: Some(C_Login),
    C_Logout: Some(C_Logout),
    C_CreateObject: Some(C_CreateObject),
    C_CopyObject: Some(C_CopyObject),
    C_DestroyObject: Some(C_DestroyObject),
    C_GetObjectSize: Some(C_GetObjectSize),
    C_GetAttributeValue: Some(C_GetAttributeValue),
    C_SetAttributeValue: Some(C_SetAttributeValue),
    C_FindObjectsInit: Some(C_FindObjectsInit),
    C_FindObjects: Some(C_FindObjects),
    C_FindObjectsFinal: Some(C_FindObjectsFinal),
    C_EncryptInit: Some(C_EncryptInit),
    C_Encrypt: Some(C_Encrypt),
    C_EncryptUpdate: Some(C_EncryptUpdate),
    C_EncryptFinal: Some(C_EncryptFinal),
    C_DecryptInit: Some(C_DecryptInit),
    C_Decrypt: Some(C_Decrypt),
    C_DecryptUpdate: Some(C_DecryptUpdate),
    C_DecryptFinal: Some(C_DecryptFinal),
    C_DigestInit: Some(C_DigestInit),
    C_Digest: Some(C_Digest),
    C_DigestUpdate: Some(C_DigestUpdate),
    C_DigestKey: Some(C_DigestKey),
    C_DigestFinal: Some(C_DigestFinal),
    C_SignInit: Some(C_SignInit),
    C_Sign: Some(C_Sign),
    C_SignUpdate: Some(C_SignUpdate),
    C_SignFinal: Some(C_SignFinal),
    C_SignRecoverInit: Some(C_SignRecoverInit),
    C_SignRecover: Some(C_SignRecover),
    C_VerifyInit: Some(C_VerifyInit),
    C_Verify: Some(C_Verify),
    C_VerifyUpdate: Some(C_VerifyUpdate),
    C_VerifyFinal: Some(C_VerifyFinal),
    C_VerifyRecoverInit: Some(C_VerifyRecoverInit),
    C_VerifyRecover: Some(C_VerifyRecover),
    C_DigestEncryptUpdate: Some(C_DigestEncryptUpdate),
    C_DecryptDigestUpdate: Some(C_DecryptDigestUpdate),
    C_SignEncryptUpdate: Some(C_SignEncryptUpdate),
    C_DecryptVerifyUpdate: Some(C_DecryptVerifyUpdate),
    C_GenerateKey: Some(C_GenerateKey),
    C_GenerateKeyPair: Some(C_GenerateKeyPair),
    C_WrapKey: Some(C_WrapKey),
    C_UnwrapKey: Some(C_UnwrapKey),
    C_DeriveKey: Some(C_DeriveKey),
    C_SeedRandom: Some(C_SeedRandom),
    C_GenerateRandom: Some(C_GenerateRandom),
    C_GetFunctionStatus: Some(C_GetFunctionStatus),
    C_CancelFunction: Some(C_CancelFunction),
    C_WaitForSlotEvent: Some(C_WaitForSlotEvent),
};
