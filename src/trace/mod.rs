//! Instruments: dirty-page tracking (bitmap-trace, dpt), qtrace block traces, event timing logs.
