# contrib/local.mk: dsmctl and the demo server.
bin_PROGRAMS += dsmctl dsmkit-demo

dsmctl_SOURCES = contrib/dsmctl/dsmctl.c
dsmctl_CFLAGS = $(AM_CFLAGS) $(TALLOC_CFLAGS)
dsmctl_LDADD = libdsmkit.la $(TALLOC_LIBS)

dsmkit_demo_SOURCES = contrib/demo/demo.c contrib/demo/server.c contrib/demo/client.c contrib/demo/demo.h
EXTRA_DIST += contrib/demo/run-demo.sh
dsmkit_demo_CFLAGS = $(AM_CFLAGS) $(TALLOC_CFLAGS)
dsmkit_demo_LDADD = libdsmkit.la $(TALLOC_LIBS)
