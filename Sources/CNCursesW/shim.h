#ifndef STORM_CNCURSESW_SHIM_H
#define STORM_CNCURSESW_SHIM_H
/* SwiftPM drops -D flags from pkg-config: define what the wide API needs here. */
#ifndef _XOPEN_SOURCE_EXTENDED
#define _XOPEN_SOURCE_EXTENDED 1
#endif
#define NCURSES_WIDECHAR 1
#include <locale.h>
#include <ncursesw/curses.h>

/* Swift 6 rejects C globals and does not import function-like macros: wrap them. */
static inline WINDOW *storm_stdscr(void) { return stdscr; }
static inline int storm_lines(void) { return LINES; }
static inline int storm_cols(void) { return COLS; }
static inline int storm_color_pair(int n) { return COLOR_PAIR(n); }
static inline const char *storm_curses_version(void) { return curses_version(); }
#endif
