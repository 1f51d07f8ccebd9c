//! Which syscall is the current task in, and with which arguments? Read from
//! the task's saved user registers (`bpf_task_pt_regs`), so no
//! `sys_enter_*` probe and no per-thread map update is needed on every file
//! read/write in the system. x86_64 register and syscall numbering.
use agent_common::DataSource;
use aya_ebpf::{
    bindings::pt_regs,
    helpers::{bpf_get_current_task_btf, bpf_probe_read_user},
};

/// The syscall arguments a data event needs.
pub struct SyscallArgs {
    pub source: DataSource,
    pub fd: i32,
    /// Second argument: buffer, iovec array or msghdr, by `source`.
    pub arg1: u64,
    /// Third argument: buffer length or iovec count.
    pub arg2: u64,
}

#[inline(always)]
fn source_of(nr: u64) -> DataSource {
    match nr {
        0 => DataSource::Read,
        1 => DataSource::Write,
        19 => DataSource::Readv,
        20 => DataSource::Writev,
        40 => DataSource::Sendfile,
        44 => DataSource::Sendto,
        45 => DataSource::Recvfrom,
        46 => DataSource::Sendmsg,
        47 => DataSource::Recvmsg,
        _ => DataSource::Other,
    }
}

/// The current syscall and its arguments, from the registers saved at entry.
#[inline(always)]
pub fn current() -> SyscallArgs {
    // SAFETY: both helpers return non-null BTF pointers for the current task;
    // the verifier turns the loads below into fault-tolerant probe loads.
    unsafe {
        let task = bpf_get_current_task_btf();
        let regs = task_pt_regs(task.cast()) as *const pt_regs;
        SyscallArgs {
            source: source_of((*regs).orig_rax),
            fd: (*regs).rdi as i32,
            arg1: (*regs).rsi,
            arg2: (*regs).rdx,
        }
    }
}

/// `bpf_task_pt_regs` (helper 175); aya-ebpf's binding takes its own task type.
#[inline(always)]
unsafe fn task_pt_regs(task: *mut core::ffi::c_void) -> u64 {
    let f: unsafe extern "C" fn(*mut core::ffi::c_void) -> u64 =
        unsafe { core::mem::transmute(175usize) };
    unsafe { f(task) }
}

/// User buffer holding the first bytes the syscall moved, and its length.
#[inline(always)]
pub fn first_buffer(a: &SyscallArgs) -> Result<(u64, u64), i32> {
    match a.source {
        DataSource::Read | DataSource::Write | DataSource::Recvfrom | DataSource::Sendto => {
            Ok((a.arg1, a.arg2))
        }
        DataSource::Readv | DataSource::Writev => first_iovec(a.arg1),
        DataSource::Recvmsg | DataSource::Sendmsg => {
            // struct user_msghdr: msg_name, msg_namelen (padded), msg_iov.
            let iov: u64 = unsafe { bpf_probe_read_user((a.arg1 + 16) as *const u64)? };
            first_iovec(iov)
        }
        _ => Err(-22),
    }
}

#[inline(always)]
fn first_iovec(iov: u64) -> Result<(u64, u64), i32> {
    let v: [u64; 2] = unsafe { bpf_probe_read_user(iov as *const [u64; 2])? };
    Ok((v[0], v[1]))
}
