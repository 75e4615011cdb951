# src/local.mk: libdsmkit.
lib_LTLIBRARIES += libdsmkit.la

libdsmkit_la_SOURCES = \
	src/version.c \
	src/elog.c \
	src/mcxt.c \
	src/ipc.c \
	src/resowner.c \
	src/dsm_impl.c \
	src/dsm_impl_posix.c \
	src/dsm_impl_sysv.c \
	src/dsm_impl_mmap.c \
	src/dsm.c \
	src/supervisor.c \
	src/injection.c \
	src/inspect.c \
	src/dsmkit_int.h \
	src/injection.h \
	src/dsm_impl_int.h \
	src/dsm_int.h

libdsmkit_la_CFLAGS = $(AM_CFLAGS) @VISIBILITY_CFLAGS@ $(TALLOC_CFLAGS) -DDSMKIT_BUILDING_LIBRARY
libdsmkit_la_LIBADD = $(TALLOC_LIBS)
libdsmkit_la_LDFLAGS = -version-info @DSMKIT_LT_VERSION@ -no-undefined

dsmkitincludedir = $(includedir)/dsmkit
dsmkitinclude_HEADERS = \
	include/dsmkit/common.h \
	include/dsmkit/elog.h \
	include/dsmkit/palloc.h \
	include/dsmkit/memutils.h \
	include/dsmkit/ipc.h \
	include/dsmkit/resowner.h \
	include/dsmkit/dsm_impl.h \
	include/dsmkit/dsm.h \
	include/dsmkit/supervisor.h \
	include/dsmkit/injection.h \
	include/dsmkit/inspect.h
nodist_dsmkitinclude_HEADERS = include/dsmkit/version.h
include_HEADERS = include/dsmkit.h
