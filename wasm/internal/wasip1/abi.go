package wasip1

import (
	"errors"
	"io"
	"io/fs"
	"os"

	"golang.org/x/sys/unix"
)

// Errno is a WASI preview-1 error number (witx type "errno", u16).
type Errno uint16

// The errno values of the preview-1 witx, in its order.
const (
	ErrnoSuccess Errno = iota
	Errno2big
	ErrnoAcces
	ErrnoAddrinuse
	ErrnoAddrnotavail
	ErrnoAfnosupport
	ErrnoAgain
	ErrnoAlready
	ErrnoBadf
	ErrnoBadmsg
	ErrnoBusy
	ErrnoCanceled
	ErrnoChild
	ErrnoConnaborted
	ErrnoConnrefused
	ErrnoConnreset
	ErrnoDeadlk
	ErrnoDestaddrreq
	ErrnoDom
	ErrnoDquot
	ErrnoExist
	ErrnoFault
	ErrnoFbig
	ErrnoHostunreach
	ErrnoIdrm
	ErrnoIlseq
	ErrnoInprogress
	ErrnoIntr
	ErrnoInval
	ErrnoIo
	ErrnoIsconn
	ErrnoIsdir
	ErrnoLoop
	ErrnoMfile
	ErrnoMlink
	ErrnoMsgsize
	ErrnoMultihop
	ErrnoNametoolong
	ErrnoNetdown
	ErrnoNetreset
	ErrnoNetunreach
	ErrnoNfile
	ErrnoNobufs
	ErrnoNodev
	ErrnoNoent
	ErrnoNoexec
	ErrnoNolck
	ErrnoNolink
	ErrnoNomem
	ErrnoNomsg
	ErrnoNoprotoopt
	ErrnoNospc
	ErrnoNosys
	ErrnoNotconn
	ErrnoNotdir
	ErrnoNotempty
	ErrnoNotrecoverable
	ErrnoNotsock
	ErrnoNotsup
	ErrnoNotty
	ErrnoNxio
	ErrnoOverflow
	ErrnoOwnerdead
	ErrnoPerm
	ErrnoPipe
	ErrnoProto
	ErrnoProtonosupport
	ErrnoPrototype
	ErrnoRange
	ErrnoRofs
	ErrnoSpipe
	ErrnoSrch
	ErrnoStale
	ErrnoTimedout
	ErrnoTxtbsy
	ErrnoXdev
	ErrnoNotcapable
)

// hostErrnos maps Linux errnos to WASI ones; what is missing is EIO.
var hostErrnos = map[unix.Errno]Errno{
	unix.E2BIG: Errno2big, unix.EACCES: ErrnoAcces, unix.EADDRINUSE: ErrnoAddrinuse,
	unix.EADDRNOTAVAIL: ErrnoAddrnotavail, unix.EAFNOSUPPORT: ErrnoAfnosupport, unix.EAGAIN: ErrnoAgain,
	unix.EALREADY: ErrnoAlready, unix.EBADF: ErrnoBadf, unix.EBADMSG: ErrnoBadmsg, unix.EBUSY: ErrnoBusy,
	unix.ECANCELED: ErrnoCanceled, unix.ECHILD: ErrnoChild, unix.ECONNABORTED: ErrnoConnaborted,
	unix.ECONNREFUSED: ErrnoConnrefused, unix.ECONNRESET: ErrnoConnreset, unix.EDEADLK: ErrnoDeadlk,
	unix.EDESTADDRREQ: ErrnoDestaddrreq, unix.EDOM: ErrnoDom, unix.EDQUOT: ErrnoDquot, unix.EEXIST: ErrnoExist,
	unix.EFAULT: ErrnoFault, unix.EFBIG: ErrnoFbig, unix.EHOSTUNREACH: ErrnoHostunreach, unix.EIDRM: ErrnoIdrm,
	unix.EILSEQ: ErrnoIlseq, unix.EINPROGRESS: ErrnoInprogress, unix.EINTR: ErrnoIntr, unix.EINVAL: ErrnoInval,
	unix.EIO: ErrnoIo, unix.EISCONN: ErrnoIsconn, unix.EISDIR: ErrnoIsdir, unix.ELOOP: ErrnoLoop,
	unix.EMFILE: ErrnoMfile, unix.EMLINK: ErrnoMlink, unix.EMSGSIZE: ErrnoMsgsize, unix.EMULTIHOP: ErrnoMultihop,
	unix.ENAMETOOLONG: ErrnoNametoolong, unix.ENETDOWN: ErrnoNetdown, unix.ENETRESET: ErrnoNetreset,
	unix.ENETUNREACH: ErrnoNetunreach, unix.ENFILE: ErrnoNfile, unix.ENOBUFS: ErrnoNobufs, unix.ENODEV: ErrnoNodev,
	unix.ENOENT: ErrnoNoent, unix.ENOEXEC: ErrnoNoexec, unix.ENOLCK: ErrnoNolck, unix.ENOLINK: ErrnoNolink,
	unix.ENOMEM: ErrnoNomem, unix.ENOMSG: ErrnoNomsg, unix.ENOPROTOOPT: ErrnoNoprotoopt, unix.ENOSPC: ErrnoNospc,
	unix.ENOSYS: ErrnoNosys, unix.ENOTCONN: ErrnoNotconn, unix.ENOTDIR: ErrnoNotdir, unix.ENOTEMPTY: ErrnoNotempty,
	unix.ENOTRECOVERABLE: ErrnoNotrecoverable, unix.ENOTSOCK: ErrnoNotsock, unix.EOPNOTSUPP: ErrnoNotsup,
	unix.ENOTTY: ErrnoNotty, unix.ENXIO: ErrnoNxio, unix.EOVERFLOW: ErrnoOverflow, unix.EOWNERDEAD: ErrnoOwnerdead,
	unix.EPERM: ErrnoPerm, unix.EPIPE: ErrnoPipe, unix.EPROTO: ErrnoProto, unix.EPROTONOSUPPORT: ErrnoProtonosupport,
	unix.EPROTOTYPE: ErrnoPrototype, unix.ERANGE: ErrnoRange, unix.EROFS: ErrnoRofs, unix.ESPIPE: ErrnoSpipe,
	unix.ESRCH: ErrnoSrch, unix.ESTALE: ErrnoStale, unix.ETIMEDOUT: ErrnoTimedout, unix.ETXTBSY: ErrnoTxtbsy,
	unix.EXDEV: ErrnoXdev,
}

// toErrno maps a host error (a unix.Errno, possibly wrapped in an
// *fs.PathError or *os.LinkError) to the guest's errno.
func toErrno(err error) Errno {
	if err == nil {
		return ErrnoSuccess
	}
	var e unix.Errno
	if errors.As(err, &e) {
		if w, ok := hostErrnos[e]; ok {
			return w
		}
		return ErrnoIo
	}
	switch {
	case errors.Is(err, io.ErrClosedPipe), errors.Is(err, os.ErrClosed):
		return ErrnoPipe
	case errors.Is(err, fs.ErrNotExist):
		return ErrnoNoent
	case errors.Is(err, fs.ErrPermission):
		return ErrnoPerm
	}
	return ErrnoIo
}

// Rights (witx "rights", u64): what an fd may be used for.
const (
	RightFdDatasync uint64 = 1 << iota
	RightFdRead
	RightFdSeek
	RightFdFdstatSetFlags
	RightFdSync
	RightFdTell
	RightFdWrite
	RightFdAdvise
	RightFdAllocate
	RightPathCreateDirectory
	RightPathCreateFile
	RightPathLinkSource
	RightPathLinkTarget
	RightPathOpen
	RightFdReaddir
	RightPathReadlink
	RightPathRenameSource
	RightPathRenameTarget
	RightPathFilestatGet
	RightPathFilestatSetSize
	RightPathFilestatSetTimes
	RightFdFilestatGet
	RightFdFilestatSetSize
	RightFdFilestatSetTimes
	RightPathSymlink
	RightPathRemoveDirectory
	RightPathUnlinkFile
	RightPollFdReadwrite
	RightSockShutdown
	RightSockAccept

	// rightsAll is every right the witx defines.
	rightsAll = RightSockAccept<<1 - 1
)

// The rights each kind of file can have: an fd gets what it asked for
// (bounded by its directory's inheriting rights) and applies to it.
const (
	rightsFile = RightFdDatasync | RightFdRead | RightFdSeek | RightFdFdstatSetFlags | RightFdSync |
		RightFdTell | RightFdWrite | RightFdAdvise | RightFdAllocate | RightFdFilestatGet |
		RightFdFilestatSetSize | RightFdFilestatSetTimes | RightPollFdReadwrite
	rightsDir = RightFdFdstatSetFlags | RightFdSync | RightFdAdvise | RightPathCreateDirectory |
		RightPathCreateFile | RightPathLinkSource | RightPathLinkTarget | RightPathOpen | RightFdReaddir |
		RightPathReadlink | RightPathRenameSource | RightPathRenameTarget | RightPathFilestatGet |
		RightPathFilestatSetSize | RightPathFilestatSetTimes | RightFdFilestatGet | RightFdFilestatSetTimes |
		RightPathSymlink | RightPathRemoveDirectory | RightPathUnlinkFile | RightPollFdReadwrite
	rightsDirInheriting = rightsDir | rightsFile
	rightsStdin         = RightFdRead | RightFdFdstatSetFlags | RightFdFilestatGet | RightPollFdReadwrite
	rightsStdout        = RightFdWrite | RightFdFdstatSetFlags | RightFdFilestatGet | RightPollFdReadwrite
	// rightsWriting are the rights that need a file opened for writing.
	rightsWriting = RightFdWrite | RightFdDatasync | RightFdAllocate | RightFdFilestatSetSize
)

// Filetype (witx "filetype", u8).
const (
	FiletypeUnknown uint8 = iota
	FiletypeBlockDevice
	FiletypeCharacterDevice
	FiletypeDirectory
	FiletypeRegularFile
	FiletypeSocketDgram
	FiletypeSocketStream
	FiletypeSymbolicLink
)

// fdflags (witx "fdflags", u16).
const (
	fdflagAppend   = 1 << 0
	fdflagDsync    = 1 << 1
	fdflagNonblock = 1 << 2
	fdflagRsync    = 1 << 3
	fdflagSync     = 1 << 4
	fdflagsAll     = 1<<5 - 1
)

// oflags (witx "oflags", u16).
const (
	oflagCreat     = 1 << 0
	oflagDirectory = 1 << 1
	oflagExcl      = 1 << 2
	oflagTrunc     = 1 << 3
	oflagsAll      = 1<<4 - 1
)

// lookupflagSymlinkFollow (witx "lookupflags"): follow a final symlink.
const lookupflagSymlinkFollow = 1

// fstflags (witx "fstflags", u16).
const (
	fstAtim    = 1 << 0
	fstAtimNow = 1 << 1
	fstMtim    = 1 << 2
	fstMtimNow = 1 << 3
	fstAll     = 1<<4 - 1
)

// Clock ids (witx "clockid").
const (
	clockRealtime = iota
	clockMonotonic
	clockProcessCputime
	clockThreadCputime
)

// Event types (witx "eventtype").
const (
	eventClock = iota
	eventFdRead
	eventFdWrite
)

const (
	subclockAbstime  = 1 // witx "subclockflags"
	eventrwHangup    = 1 // witx "eventrwflags"
	preopentypeDir   = 0 // witx "preopentype"
	whenceSet        = 0
	whenceCur        = 1
	whenceEnd        = 2
	adviceNoreuse    = 5 // the last witx "advice"
	sdflagsAll       = 3 // witx "sdflags": rd | wr
	sizeIovec        = 8
	sizeFdstat       = 24
	sizeFilestat     = 64
	sizeDirent       = 24
	sizePrestat      = 8
	sizeSubscription = 48
	// snapshot 0 (wasi_unstable) layouts where they differ
	sizeFilestatUnstable     = 56
	sizeSubscriptionUnstable = 56
	sizeEvent                = 32
	maxInt64                 = 1<<63 - 1
)

// filetypeOf maps a stat mode to the WASI file type.
func filetypeOf(mode uint32) uint8 {
	switch mode & unix.S_IFMT {
	case unix.S_IFREG:
		return FiletypeRegularFile
	case unix.S_IFDIR:
		return FiletypeDirectory
	case unix.S_IFLNK:
		return FiletypeSymbolicLink
	case unix.S_IFCHR:
		return FiletypeCharacterDevice
	case unix.S_IFBLK:
		return FiletypeBlockDevice
	case unix.S_IFSOCK:
		return FiletypeSocketStream
	}
	return FiletypeUnknown
}

// filetypeOfDirent maps a getdents d_type to the WASI file type.
func filetypeOfDirent(t uint8) uint8 {
	switch t {
	case unix.DT_REG:
		return FiletypeRegularFile
	case unix.DT_DIR:
		return FiletypeDirectory
	case unix.DT_LNK:
		return FiletypeSymbolicLink
	case unix.DT_CHR:
		return FiletypeCharacterDevice
	case unix.DT_BLK:
		return FiletypeBlockDevice
	case unix.DT_SOCK:
		return FiletypeSocketStream
	}
	return FiletypeUnknown
}
