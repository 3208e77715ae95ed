package images

import "runtime"

// goarch is the architecture Linux images are built for by default.
const goarch = runtime.GOARCH
