# doc/local.mk: man pages (hand-written roff) and the design notes.
dist_man_MANS += $(DSMKIT_MAN3) $(DSMKIT_MAN1)
DSMKIT_MAN1 =
DSMKIT_MAN3 =
EXTRA_DIST += doc/design.md
