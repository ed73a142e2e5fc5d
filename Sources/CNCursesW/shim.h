#ifndef STORM_CNCURSESW_SHIM_H
#define STORM_CNCURSESW_SHIM_H
/* SwiftPM drops -D flags from pkg-config: define what the wide API needs here. */
#ifndef _XOPEN_SOURCE_EXTENDED
#define _XOPEN_SOURCE_EXTENDED 1
#endif
#define NCURSES_WIDECHAR 1
#include <langinfo.h>
#include <locale.h>
#include <string.h>
#include <wchar.h>
#include <ncursesw/curses.h>

/* Swift 6 rejects C globals and does not import function-like macros (stdscr, LINES, COLOR_PAIR, A_*,
 * and the stdscr forms of the window functions, several of which are macros): wrap them. Every curses
 * call stormtop makes goes through one of these, on stdscr. */
static inline WINDOW *storm_stdscr(void) { return stdscr; }
static inline int storm_lines(void) { return LINES; }
static inline int storm_cols(void) { return COLS; }
static inline int storm_color_pair(int n) { return COLOR_PAIR(n); }
static inline const char *storm_curses_version(void) { return curses_version(); }

static inline int storm_a_normal(void) { return (int)A_NORMAL; }
static inline int storm_a_bold(void) { return (int)A_BOLD; }
static inline int storm_a_dim(void) { return (int)A_DIM; }
static inline int storm_a_reverse(void) { return (int)A_REVERSE; }
static inline int storm_a_underline(void) { return (int)A_UNDERLINE; }

/* setlocale(LC_ALL, name); LC_ALL is a macro of a macro. */
static inline const char *storm_setlocale_all(const char *name) { return setlocale(LC_ALL, name); }
/* 1 when the current locale's character set is UTF-8 (box and block characters can be drawn). */
static inline int storm_locale_is_utf8(void) {
    const char *codeset = nl_langinfo(CODESET);
    return codeset != NULL && (strcmp(codeset, "UTF-8") == 0 || strcmp(codeset, "utf8") == 0);
}

/* Columns a character takes (2 for CJK, -1 for control characters). glibc only declares wcwidth under
 * _XOPEN_SOURCE, which SwiftPM dropped with pkg-config's flags: declare it (same signature). */
extern int wcwidth(wchar_t character);
static inline int storm_wcwidth(wchar_t character) { return wcwidth(character); }

static inline int storm_getch(void) { return wgetch(stdscr); }
static inline void storm_timeout(int milliseconds) { wtimeout(stdscr, milliseconds); }
static inline int storm_keypad(int on) { return keypad(stdscr, on ? TRUE : FALSE); }
static inline int storm_erase(void) { return werase(stdscr); }
static inline int storm_refresh(void) { return wrefresh(stdscr); }
static inline int storm_clearok(void) { return clearok(stdscr, TRUE); }
static inline int storm_attrset(int attributes) { return wattrset(stdscr, attributes); }
static inline int storm_put_wide(int y, int x, const wchar_t *text, int count) {
    return mvwaddnwstr(stdscr, y, x, text, count);
}
#endif
