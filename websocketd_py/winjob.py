"""Windows: each program runs in a Job Object of its own, so its whole tree can be ended.

Windows has no process groups that signals reach: a grandchild (`cmd /c`
starting another program, a script starting a server) outlives its parent
and keeps the session's pipes open. A job holds every process the program
starts, even after the program itself has exited: `active_processes()` says
whether the tree still runs and `terminate()` ends all of it. The job is
made with JOB_OBJECT_LIMIT_KILL_ON_JOB_CLOSE, so the tree ends too when the
server dies without ending it. Windows 8 and later nest jobs, so this works
when the server itself runs in a job (a service, CI).

The program is started suspended (`SUSPENDED`) and resumed only once it is
in the job, so no child it starts can escape. `subprocess.Popen` closes the
main thread's handle, so resuming asks `NtResumeProcess` with the process
handle (`Popen._handle`, CPython's name for it on Windows since 3.3).
Imported on Windows only.
"""

import ctypes
from ctypes import wintypes

#: Popen creationflags: the main thread waits until `Job.adopt` resumes it.
SUSPENDED = 0x00000004  # CREATE_SUSPENDED

_KILL_ON_JOB_CLOSE = 0x00002000
_BASIC_ACCOUNTING = 1    # JobObjectBasicAccountingInformation
_EXTENDED_LIMITS = 9     # JobObjectExtendedLimitInformation
_CTRL_BREAK_EVENT = 1

_kernel32 = ctypes.WinDLL("kernel32", use_last_error=True)
_ntdll = ctypes.WinDLL("ntdll")


class _BasicLimits(ctypes.Structure):
    _fields_ = [("PerProcessUserTimeLimit", ctypes.c_int64),
                ("PerJobUserTimeLimit", ctypes.c_int64),
                ("LimitFlags", wintypes.DWORD),
                ("MinimumWorkingSetSize", ctypes.c_size_t),
                ("MaximumWorkingSetSize", ctypes.c_size_t),
                ("ActiveProcessLimit", wintypes.DWORD),
                ("Affinity", ctypes.c_size_t),
                ("PriorityClass", wintypes.DWORD),
                ("SchedulingClass", wintypes.DWORD)]


class _IoCounters(ctypes.Structure):
    _fields_ = [(name, ctypes.c_uint64) for name in (
        "ReadOperationCount", "WriteOperationCount", "OtherOperationCount",
        "ReadTransferCount", "WriteTransferCount", "OtherTransferCount")]


class _ExtendedLimits(ctypes.Structure):
    _fields_ = [("BasicLimitInformation", _BasicLimits),
                ("IoInfo", _IoCounters),
                ("ProcessMemoryLimit", ctypes.c_size_t),
                ("JobMemoryLimit", ctypes.c_size_t),
                ("PeakProcessMemoryUsed", ctypes.c_size_t),
                ("PeakJobMemoryUsed", ctypes.c_size_t)]


class _Accounting(ctypes.Structure):
    _fields_ = [("TotalUserTime", ctypes.c_int64),
                ("TotalKernelTime", ctypes.c_int64),
                ("ThisPeriodTotalUserTime", ctypes.c_int64),
                ("ThisPeriodTotalKernelTime", ctypes.c_int64),
                ("TotalPageFaultCount", wintypes.DWORD),
                ("TotalProcesses", wintypes.DWORD),
                ("ActiveProcesses", wintypes.DWORD),
                ("TotalTerminatedProcesses", wintypes.DWORD)]


_kernel32.CreateJobObjectW.restype = wintypes.HANDLE
_kernel32.CreateJobObjectW.argtypes = (wintypes.LPVOID, wintypes.LPCWSTR)
_kernel32.SetInformationJobObject.argtypes = (wintypes.HANDLE, ctypes.c_int, wintypes.LPVOID,
                                              wintypes.DWORD)
_kernel32.QueryInformationJobObject.argtypes = (wintypes.HANDLE, ctypes.c_int, wintypes.LPVOID,
                                                wintypes.DWORD, wintypes.LPDWORD)
_kernel32.AssignProcessToJobObject.argtypes = (wintypes.HANDLE, wintypes.HANDLE)
_kernel32.TerminateJobObject.argtypes = (wintypes.HANDLE, wintypes.UINT)
_kernel32.CloseHandle.argtypes = (wintypes.HANDLE,)
_kernel32.GetConsoleProcessList.argtypes = (wintypes.LPDWORD, wintypes.DWORD)
_kernel32.GenerateConsoleCtrlEvent.argtypes = (wintypes.DWORD, wintypes.DWORD)
_ntdll.NtResumeProcess.argtypes = (wintypes.HANDLE,)
_ntdll.NtResumeProcess.restype = ctypes.c_long


def _check(succeeded, what):
    if not succeeded:
        error = ctypes.get_last_error()
        raise OSError(0, f"{what} failed: {ctypes.FormatError(error).strip()}", None, error)


class Job:
    """One program's Job Object. OSError if Windows refuses to make one."""

    def __init__(self):
        handle = _kernel32.CreateJobObjectW(None, None)
        _check(handle, "CreateJobObject")
        limits = _ExtendedLimits()
        limits.BasicLimitInformation.LimitFlags = _KILL_ON_JOB_CLOSE
        if not _kernel32.SetInformationJobObject(handle, _EXTENDED_LIMITS, ctypes.byref(limits),
                                                 ctypes.sizeof(limits)):
            _kernel32.CloseHandle(handle)
            _check(False, "SetInformationJobObject")
        self._handle = handle

    def adopt(self, popen):
        """Put `popen`, started with SUSPENDED, in the job; then let it run (always, so a
        refusal does not leave it frozen: OSError after it runs)."""
        process = int(popen._handle)
        try:
            _check(_kernel32.AssignProcessToJobObject(self._handle, process),
                   "AssignProcessToJobObject")
        finally:
            status = _ntdll.NtResumeProcess(process)
            if status != 0:
                raise OSError(0, f"NtResumeProcess failed: NTSTATUS {status & 0xFFFFFFFF:#x}")

    def active_processes(self):
        """How many processes of the tree still run (0 once the job is closed)."""
        if self._handle is None:
            return 0
        info = _Accounting()
        _check(_kernel32.QueryInformationJobObject(self._handle, _BASIC_ACCOUNTING,
                                                   ctypes.byref(info), ctypes.sizeof(info), None),
               "QueryInformationJobObject")
        return info.ActiveProcesses

    def terminate(self):
        """End every process of the tree at once (exit status 1)."""
        if self._handle is not None:
            _check(_kernel32.TerminateJobObject(self._handle, 1), "TerminateJobObject")

    def close(self):
        """Let go of the job; what still runs in it ends (KILL_ON_JOB_CLOSE). Idempotent."""
        handle, self._handle = self._handle, None
        if handle is not None:
            _kernel32.CloseHandle(handle)


def has_console():
    """Whether the server is attached to a console, without which CTRL_BREAK_EVENT cannot be
    sent (pythonw, a service, a detached start; Wine)."""
    process_ids = (wintypes.DWORD * 1)()
    return _kernel32.GetConsoleProcessList(process_ids, 1) > 0


def send_ctrl_break(process_group):
    """CTRL_BREAK_EVENT to the program's process group; OSError if Windows refuses."""
    _check(_kernel32.GenerateConsoleCtrlEvent(_CTRL_BREAK_EVENT, process_group),
           "GenerateConsoleCtrlEvent")
