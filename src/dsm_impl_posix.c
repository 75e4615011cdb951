/* dsm_impl_posix.c: placeholder, being written. */
#include "dsmkit_int.h"
