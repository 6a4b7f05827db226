#!/usr/bin/env python3
"""Run a command with io_uring forbidden by a seccomp filter, as in a container.

Usage: without-io-uring.py COMMAND [ARGS...]

Installs a seccomp-bpf filter that makes io_uring_setup, io_uring_enter and
io_uring_register fail with EPERM (what Docker's default profile does), then
execs COMMAND. Used to check that shoal's RealIo falls back to compio's polling
driver. x86_64 Linux only; needs no privileges (PR_SET_NO_NEW_PRIVS).
"""
import ctypes
import os
import platform
import struct
import sys

IO_URING_SYSCALLS_X86_64 = (425, 426, 427)  # io_uring_setup, _enter, _register
PR_SET_NO_NEW_PRIVS = 38
PR_SET_SECCOMP = 22
SECCOMP_MODE_FILTER = 2
SECCOMP_RET_ALLOW = 0x7FFF0000
SECCOMP_RET_ERRNO = 0x00050000
EPERM = 1
BPF_LD_W_ABS = 0x20
BPF_JMP_JEQ_K = 0x15
BPF_RET_K = 0x06


def main() -> int:
    if len(sys.argv) < 2:
        print(__doc__, file=sys.stderr)
        return 1
    if platform.system() != "Linux" or platform.machine() != "x86_64":
        print("without-io-uring.py: x86_64 Linux only", file=sys.stderr)
        return 1
    deny_index = 1 + len(IO_URING_SYSCALLS_X86_64) + 1
    program = [(BPF_LD_W_ABS, 0, 0, 0)]  # A = seccomp_data.nr
    for i, nr in enumerate(IO_URING_SYSCALLS_X86_64):
        here = 1 + i
        program.append((BPF_JMP_JEQ_K, deny_index - here - 1, 0, nr))
    program.append((BPF_RET_K, 0, 0, SECCOMP_RET_ALLOW))
    program.append((BPF_RET_K, 0, 0, SECCOMP_RET_ERRNO | EPERM))
    raw = b"".join(struct.pack("=HBBI", *insn) for insn in program)
    filters = ctypes.create_string_buffer(raw, len(raw))

    class SockFprog(ctypes.Structure):
        _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]

    fprog = SockFprog(len(program), ctypes.cast(filters, ctypes.c_void_p))
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_void_p, ctypes.c_ulong, ctypes.c_ulong]
    if libc.prctl(PR_SET_NO_NEW_PRIVS, 1, None, 0, 0) != 0:
        print(f"prctl(NO_NEW_PRIVS): {os.strerror(ctypes.get_errno())}", file=sys.stderr)
        return 1
    if libc.prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, ctypes.addressof(fprog), 0, 0) != 0:
        print(f"prctl(SECCOMP): {os.strerror(ctypes.get_errno())}", file=sys.stderr)
        return 1
    os.execvp(sys.argv[1], sys.argv[1:])
    return 1


if __name__ == "__main__":
    sys.exit(main())
