package images

import "syscall"

// syscallNoFollow makes file creation refuse a symlink at the final path.
const syscallNoFollow = syscall.O_NOFOLLOW
