#!/usr/bin/perl
# man/gen-man.pl: section 3 manual pages of libdeferred, made from the
# comments of its public headers.
#
#   perl man/gen-man.pl [--version V] [--date YYYY-MM-DD] --outdir DIR \
#        [--index FILE] HEADER...
#
# Writes into DIR one page per header (include/deferred/X.h gives
# deferred_X.3, include/deferred.h the overview deferred.3, listing the
# families of the other headers given), and for every exported function
# (DEFERRED_EXPORT), every static inline function and every function-like
# macro documented in a header a one-line link page NAME.3 (".so
# man3/FAMILY.3").  Nothing here knows a function's name: everything comes
# from the headers, so a renamed function renames its link page.
#
# How a comment is attributed.  A comment documents the declarations that
# follow it: types and constants, then the first run of functions and
# macros with no blank line between them (blank lines before the run, after
# types, are allowed).  A declaration outside such a run is attributed
#  - if its name ends in _at, to the comment of a macro of the same header
#    that expands to it (deferred_new() -> deferred_new_at());
#  - else to the comment just before it, if that comment names it;
#  - else to none: it is listed in its page without text, the generator
#    warns ("no comment") and, for an exported function, t/check-man.sh
#    fails.
# "/* ---- name ---- */" comments are section headings.
#
# --index FILE writes one line per name: NAME TAB PAGE TAB KIND (export,
# inline, macro) TAB the comment's words (letters and digits only, joined
# by one space; empty when the name has no comment), for t/check-man.sh.
#
# Needs perl alone (no module beyond strict and warnings).
use strict;
use warnings;

my $version = '';
my $date = '';
my $outdir;
my $index;
my @headers;
while (@ARGV) {
    my $a = shift @ARGV;
    if ($a eq '--version') { $version = shift @ARGV; }
    elsif ($a eq '--date') { $date = shift @ARGV; }
    elsif ($a eq '--outdir') { $outdir = shift @ARGV; }
    elsif ($a eq '--index') { $index = shift @ARGV; }
    elsif ($a =~ /^-/) { die "gen-man.pl: unknown option $a\n"; }
    else { push @headers, $a; }
}
die "usage: gen-man.pl [--version V] [--date D] --outdir DIR [--index FILE] HEADER...\n"
    unless defined $outdir && @headers;

my $warnings = 0;
sub warn_at { my ($where, $msg) = @_; print STDERR "gen-man.pl: $where: $msg\n"; $warnings++; }

# ---------------------------------------------------------------------------
# Reading a header into tokens.

# Strip C comments (for classifying and for prototypes).
sub strip_comments {
    my ($s) = @_;
    $s =~ s{/\*.*?\*/}{ }gs;
    $s =~ s{//[^\n]*}{}g;
    return $s;
}

# The text of a comment, its "/*", "*/" and leading " * " removed; lines
# kept (with their indentation beyond the " * ").
sub comment_text {
    my ($raw) = @_;
    $raw =~ s{^\s*/\*+}{};
    $raw =~ s{\*+/\s*$}{};
    my @lines = split /\n/, $raw, -1;
    my @out;
    for my $l (@lines) {
        $l =~ s/\s+$//;
        $l =~ s/^\s*\*(?: |$)// or $l =~ s/^ ?//;
        push @out, $l;
    }
    # A first line right after "/*" has lost its space: strip one here too.
    shift @out while @out && $out[0] =~ /^\s*$/;
    pop @out while @out && $out[-1] =~ /^\s*$/;
    $out[0] =~ s/^ // if @out;
    return join "\n", @out;
}

sub brace_depth_delta {
    my ($s) = @_;
    $s = strip_comments($s);
    $s =~ s/"(?:\\.|[^"\\])*"//g;
    $s =~ s/'(?:\\.|[^'\\])*'//g;
    my $o = () = $s =~ /\{/g;
    my $c = () = $s =~ /\}/g;
    return $o - $c;
}

# Tokens: {kind => ..., raw => text, line => n, name => ...}
# kinds: blank, comment, section, export, inline, macro, type, const, pp
sub tokenize {
    my ($file) = @_;
    open my $fh, '<', $file or die "gen-man.pl: $file: $!\n";
    my @lines = <$fh>;
    close $fh;
    chomp @lines;
    my @tok;
    my $i = 0;
    while ($i < @lines) {
        my $l = $lines[$i];
        my $start = $i + 1;
        if ($l =~ /^\s*$/) {
            push @tok, {kind => 'blank', line => $start};
            $i++;
            next;
        }
        if ($l =~ m{^\s*/\*}) {
            my $raw = $l;
            while ($raw !~ m{\*/} && $i + 1 < @lines) {
                $i++;
                $raw .= "\n" . $lines[$i];
            }
            $i++;
            if ($raw =~ m{^\s*/\*\s*-{3,}\s*(.*?)\s*-{3,}\s*\*/\s*$}) {
                push @tok, {kind => 'section', title => $1, line => $start};
            } else {
                push @tok, {kind => 'comment', raw => $raw,
                            text => comment_text($raw), line => $start};
            }
            next;
        }
        if ($l =~ /^\s*#/) {
            my $raw = $l;
            # Continuation lines, and trailing comments left open.
            while ($i + 1 < @lines
                   && ($raw =~ /\\$/ || (strip_comments($raw) =~ m{/\*}))) {
                $i++;
                $raw .= "\n" . $lines[$i];
            }
            $i++;
            my $code = strip_comments($raw);
            if ($code =~ /^\s*#\s*define\s+(\w+)\(([^)]*)\)/) {
                push @tok, {kind => 'macro', name => $1, args => $2,
                            raw => $raw, line => $start};
            } elsif ($code =~ /^\s*#\s*define\s+(\w+)/) {
                push @tok, {kind => 'const', name => $1, raw => $raw, line => $start};
            } else {
                push @tok, {kind => 'pp', raw => $raw, line => $start};
            }
            next;
        }
        if ($l =~ /^\s*extern\s+"C"\s*\{\s*$/ || $l =~ /^\s*\}\s*$/) {
            push @tok, {kind => 'pp', raw => $l, line => $start};
            $i++;
            next;
        }
        # A C statement: up to a ';' at brace depth 0, or a function body's
        # closing brace.
        my $raw = $l;
        my $depth = brace_depth_delta($l);
        my $opened = $depth > 0;
        while (1) {
            my $code = strip_comments($raw);
            last if $depth == 0 && $code =~ /;\s*$/;
            last if $depth == 0 && $opened && $code =~ /\)\s*\{/ && $code =~ /\}\s*$/
                    && $code !~ /^\s*(?:typedef|struct|enum|union)\b/;
            last if $i + 1 >= @lines;
            $i++;
            $raw .= "\n" . $lines[$i];
            $depth += brace_depth_delta($lines[$i]);
            $opened ||= $depth > 0;
        }
        $i++;
        my $code = strip_comments($raw);
        my $t = {raw => $raw, line => $start};
        if ($code =~ /\bDEFERRED_EXPORT\b/) {
            $t->{kind} = 'export';
            my $p = $code;
            $p =~ s/\bDEFERRED_EXPORT\b//;
            $p =~ s/\bDEFERRED_PRINTF\s*\([^)]*\)//g;
            $p =~ s/\s+/ /g;
            $p =~ s/^\s+|\s+$//g;
            $p =~ s/\s*;$//;
            if ($p =~ /^(.*?)\b(\w+)\s*\)?\s*\(/) {
                $t->{name} = $2;
            } else {
                warn_at("$file:$start", "cannot find the function's name in: $p");
                next;
            }
            $t->{proto} = "$p;";
        } elsif ($code =~ /^\s*static\s+inline\b/ && $code =~ /\)\s*\{/) {
            $t->{kind} = 'inline';
            my ($p) = $code =~ /^(.*?\))\s*\{/s;
            $p =~ s/^\s*static\s+inline\s+//;
            $p =~ s/\s+/ /g;
            $p =~ s/\(\s+/(/g;
            $p =~ s/^\s+|\s+$//g;
            ($t->{name}) = $p =~ /\b(\w+)\s*\(/;
            $t->{proto} = "$p;";
        } else {
            $t->{kind} = 'type';
        }
        push @tok, $t;
    }
    return @tok;
}

# ---------------------------------------------------------------------------
# Groups: a comment and what it documents.

my %is_func = (export => 1, inline => 1, macro => 1);

sub build_groups {
    my ($file, @tok) = @_;
    # The first comment of the file is the page's overview.
    my $overview = '';
    my $k = 0;
    $k++ while $k < @tok && $tok[$k]{kind} eq 'blank';
    if ($k < @tok && $tok[$k]{kind} eq 'comment') {
        $overview = $tok[$k]{text};
        $k++;
    }
    my @items;   # sequence of {section => title} and groups
    my $g;       # current group
    my $state = 'none';   # none, seeking, inrun, closed
    my $last_group;       # the last group made from a comment
    my $last_inline_group;   # the group of the last inline function
    my @orphans;
    for my $j ($k .. $#tok) {
        my $t = $tok[$j];
        my $kind = $t->{kind};
        if ($kind eq 'comment') {
            $g = {text => $t->{text}, funcs => [], types => [], line => $t->{line}};
            push @items, $g;
            $last_group = $g;
            $state = 'seeking';
        } elsif ($kind eq 'section') {
            push @items, {section => $t->{title}};
            $g = undef;
            $state = 'none';
        } elsif ($kind eq 'blank') {
            $state = 'closed' if $state eq 'inrun';
        } elsif ($is_func{$kind}) {
            if ($state eq 'seeking' || $state eq 'inrun') {
                push @{$g->{funcs}}, $t;
                $state = 'inrun';
                $last_inline_group = $g if $kind eq "inline";
            } else {
                $t->{prev_group} = $last_group;
                $t->{prev_inline_group} = $last_inline_group;
                push @orphans, $t;
            }
        } elsif ($kind eq 'type' || $kind eq 'const') {
            if ($state eq 'seeking' || $state eq 'inrun') {
                push @{$g->{types}}, $t;
            }
        }
        # pp: nothing
    }
    # Orphans.
    my %macro_group;   # macro name -> group
    for my $it (@items) {
        next unless $it->{funcs};
        for my $f (@{$it->{funcs}}) {
            $macro_group{$f->{name}} = $it if $f->{kind} eq 'macro' && !$macro_group{$f->{name}};
        }
    }
    my @macros = grep { $_->{kind} eq 'macro' } @tok;
    my @undoc;
    for my $o (@orphans) {
        my $name = $o->{name};
        my $home;
        if ($name =~ /_at$/) {
            for my $m (@macros) {
                my $body = strip_comments($m->{raw});
                $body =~ s/^\s*#\s*define\s+\w+\([^)]*\)//;
                if ($body =~ /\b\Q$name\E\s*\(/ && $macro_group{$m->{name}}) {
                    $home = $macro_group{$m->{name}};
                    last;
                }
            }
        }
        if (!$home && $o->{kind} eq "inline" && $o->{prev_inline_group}) {
            # A helper with no comment of its own, after documented ones
            # (deferred_param_int() after deferred_param_null()).
            $home = $o->{prev_inline_group};
        }
        if (!$home && $o->{prev_group} && $o->{prev_group}{text} =~ /\b\Q$name\E\b/) {
            $home = $o->{prev_group};
        }
        if ($home) {
            push @{$home->{funcs}}, $o;
        } elsif ($o->{kind} eq "macro" && $name !~ /[a-z]/) {
            # An upper-case helper macro (DEFERRED_PRINTF): not API.
        } else {
            push @undoc, $o;
            warn_at("$file:$o->{line}", "no comment for $o->{name}"
                    . ($o->{kind} eq 'export' ? " (exported)" : " ($o->{kind})"));
        }
    }
    if (@undoc) {
        push @items, {section => 'Without a comment in the header'};
        push @items, {text => '', funcs => \@undoc, types => [], undoc => 1};
    }
    return ($overview, @items);
}

# ---------------------------------------------------------------------------
# roff output.

sub esc {
    my ($s) = @_;
    $s =~ s/\\/\\e/g;
    $s =~ s/-/\\-/g if 0;
    return $s;
}

# A text line for roff: escaped, and protected when it starts with a
# control character.
sub line_out {
    my ($s) = @_;
    $s = esc($s);
    $s =~ s/^\s+//;
    $s = "\\&$s" if $s =~ /^[.']/;
    return $s;
}

# A comment's text as roff: paragraphs at blank lines; "- " items as
# bulleted paragraphs (their indented continuation lines filled in);
# other indented lines (tables, examples) without filling.
sub render_text {
    my ($text) = @_;
    my @out;
    my @paras = split /\n\s*\n/, $text;
    for my $p (@paras) {
        my @lines = split /\n/, $p;
        push @out, '.PP';
        my $mode = 'fill';   # fill, item, nofill
        my $item_indent = 0;
        for my $l (@lines) {
            my ($ind) = $l =~ /^(\s*)/;
            my $n = length $ind;
            if ($l =~ /^(\s*)-\s+(.*)$/) {
                push @out, '.fi' if $mode eq 'nofill';
                push @out, '.IP \(bu 2';
                push @out, line_out($2);
                $mode = 'item';
                $item_indent = length($1);
            } elsif ($mode eq 'item' && $n > $item_indent) {
                push @out, line_out($l);
            } elsif ($n > 0) {
                if ($mode ne 'nofill') {
                    push @out, ($mode eq 'item' ? '.IP' : '.br'), '.nf';
                    $mode = 'nofill';
                }
                my $s = esc($l);
                $s = "\\&$s" if $s =~ /^[.']/;
                push @out, $s;
            } else {
                if ($mode eq 'nofill') { push @out, '.fi'; }
                if ($mode eq 'item') { push @out, '.PP'; }
                $mode = 'fill';
                push @out, line_out($l);
            }
        }
        push @out, '.fi' if $mode eq 'nofill';
    }
    return @out;
}

# A prototype in a no-fill block: the name in bold, wrapped at commas to
# stay within 72 columns, continuation lines aligned after the "(".
sub render_proto {
    my ($proto, $name) = @_;
    my @parts;
    my $width = 72;
    if (length $proto <= $width) {
        @parts = ($proto);
    } else {
        my ($head, $rest) = $proto =~ /^(.*?\b\Q$name\E\s*\)?\s*\()(.*)$/;
        ($head, $rest) = ('', $proto) unless defined $head;
        my $indent = length $head;
        $indent = 8 if $indent > 40;
        my @args = split /(?<=,) /, $rest;
        my $cur = $head;
        for my $a (@args) {
            if (length($cur) + length($a) + 1 > $width && $cur !~ /^\s*$/ && $cur ne $head) {
                push @parts, $cur;
                $cur = (' ' x $indent) . $a;
            } else {
                $cur .= ($cur eq $head || $cur =~ /^\s*$/) ? $a : " $a";
            }
        }
        push @parts, $cur;
    }
    my @out;
    for my $p (@parts) {
        my $s = esc($p);
        $s =~ s/\b\Q$name\E\b/\\fB$name\\fP/;
        $s = "\\&$s" if $s =~ /^[.']/;
        push @out, $s;
    }
    return @out;
}

sub synopsis_of {
    my ($f) = @_;
    if ($f->{kind} eq 'macro') {
        my $args = $f->{args};
        $args =~ s/\s+/ /g;
        return "#define \\fB$f->{name}\\fP(" . esc($args) . ")";
    }
    return render_proto($f->{proto}, $f->{name});
}

sub words {
    my ($s) = @_;
    my @w = $s =~ /([A-Za-z0-9]+)/g;
    return join ' ', @w;
}

sub first_sentence {
    my ($overview) = @_;
    my ($p) = split /\n\s*\n/, $overview;
    $p = '' unless defined $p;
    $p =~ s/\s+/ /g;
    $p =~ s/^\S+\.h:\s*//;
    $p =~ s/\.\s*$//;
    return $p;
}

# ---------------------------------------------------------------------------
# Main.

my @pages;   # {family, header, include, overview, items, names}
for my $h (@headers) {
    my ($base) = $h =~ m{([^/]+)\.h$};
    die "gen-man.pl: $h: not a header\n" unless defined $base;
    my $include;
    my $family;
    if ($h =~ m{(?:^|/)deferred/([^/]+)\.h$}) {
        $include = "deferred/$1.h";
        $family = "deferred_$1";
    } else {
        $include = "$base.h";
        $family = $base;
    }
    my @tok = tokenize($h);
    my ($overview, @items) = build_groups($h, @tok);
    push @pages, {family => $family, header => $h, include => $include,
                  overview => $overview, items => \@items};
}

unless ($date) {
    my $mtime = 0;
    if (defined $ENV{SOURCE_DATE_EPOCH} && $ENV{SOURCE_DATE_EPOCH} =~ /^\d+$/) {
        $mtime = $ENV{SOURCE_DATE_EPOCH};
    } else {
        for my $h (@headers) { my $m = (stat $h)[9]; $mtime = $m if $m > $mtime; }
    }
    my @t = gmtime $mtime;
    $date = sprintf '%04d-%02d-%02d', $t[5] + 1900, $t[4] + 1, $t[3];
}

my @families = map { $_->{family} } @pages;
my %index;   # name -> [page, kind, words]
my @index_order;

sub write_file {
    my ($path, @lines) = @_;
    open my $fh, '>', "$path.tmp" or die "gen-man.pl: $path: $!\n";
    print $fh map { "$_\n" } @lines;
    close $fh or die "gen-man.pl: $path: $!\n";
    rename "$path.tmp", $path or die "gen-man.pl: $path: $!\n";
}

my $source = 'libdeferred' . ($version ne '' ? " $version" : '');

sub see_also {
    my ($self) = @_;
    my @o = grep { $_ ne $self } ('deferred', grep { $_ ne 'deferred' } @families);
    my @out = ('.SH SEE ALSO');
    for my $k (0 .. $#o) {
        push @out, ".BR $o[$k] (3)" . ($k < $#o ? ',' : '');
    }
    return @out;
}

sub link_flags {
    my ($overview) = @_;
    if ($overview =~ /\(libdeferred-([\w]+)/) {
        return ("Link with \\fI\\-ldeferred\\-$1 \\-ldeferred\\fP"
                . " (pkg-config module \\fIdeferred\\-$1\\fP).");
    }
    return ("Link with \\fI\\-ldeferred\\fP (pkg-config module \\fIdeferred\\fP).");
}

for my $pg (@pages) {
    my $fam = $pg->{family};
    my @names;
    my %seen;
    for my $it (@{$pg->{items}}) {
        next unless $it->{funcs};
        for my $f (@{$it->{funcs}}) {
            next if $seen{$f->{name}}++;
            push @names, $f->{name};
        }
    }
    $pg->{names} = \@names;
    next if $fam eq 'deferred' && !@names;   # the overview, written below

    my $what = first_sentence($pg->{overview});
    my @o;
    push @o, ".\\\" Generated by man/gen-man.pl from $pg->{include}: do not edit.";
    push @o, ".TH " . uc($fam) . " 3 \"$date\" \"$source\" \"libdeferred Manual\"";
    push @o, '.nh', '.ad l';
    push @o, '.SH NAME';
    push @o, join(', ', map { esc($_) } ($fam, @names)) . ' \- ' . esc($what);
    push @o, '.SH SYNOPSIS', '.nf', "\\fB#include <$pg->{include}>\\fP";
    my @syn;
    for my $it (@{$pg->{items}}) {
        if (defined $it->{section}) {
            push @syn, '', "/* " . esc($it->{section}) . " */";
            next;
        }
        next unless @{$it->{funcs}};
        push @syn, '';
        for my $f (@{$it->{funcs}}) { push @syn, synopsis_of($f); }
    }
    push @o, @syn, '.fi', '.PP', link_flags($pg->{overview} . "\n" . $pg->{header});
    push @o, '.SH DESCRIPTION';
    push @o, render_text($pg->{overview}) if $pg->{overview} ne '';
    for my $it (@{$pg->{items}}) {
        if (defined $it->{section}) {
            my $t = $it->{section};
            push @o, '.SS ' . esc(ucfirst $t);
            next;
        }
        my @fn = map { $_->{name} } @{$it->{funcs}};
        my %u; @fn = grep { !$u{$_}++ } @fn;
        my @ty = grep { $_->{kind} eq 'type' || $_->{kind} eq 'const' } @{$it->{types}};
        if (@fn) {
            push @o, '.PP', '.B ' . join(', ', map { esc($_) . '()' } @fn);
        }
        push @o, '.RS 4' if @fn;
        if (@ty) {
            push @o, '.PP', '.nf';
            for my $t (@ty) {
                for my $l (split /\n/, $t->{raw}) {
                    my $s = esc($l);
                    $s = "\\&$s" if $s =~ /^[.']/;
                    push @o, $s;
                }
            }
            push @o, '.fi';
        }
        if ($it->{undoc}) {
            push @o, '.PP', 'No comment in the header.';
        } elsif ($it->{text} ne '') {
            push @o, render_text($it->{text});
        }
        push @o, '.RE' if @fn;
        my $w = words($it->{text} // '');
        for my $f (@{$it->{funcs}}) {
            if ($index{$f->{name}}) {
                # A name both a macro and an exported function is "export".
                $index{$f->{name}}[1] = 'export' if $f->{kind} eq 'export';
                next;
            }
            $index{$f->{name}} = [$fam, $f->{kind}, $w];
            push @index_order, $f->{name};
        }
    }
    push @o, see_also($fam);
    write_file("$outdir/$fam.3", @o);
    $pg->{written} = 1;
}

# The overview page.
{
    my ($top) = grep { $_->{family} eq 'deferred' } @pages;
    my @o;
    push @o, ".\\\" Generated by man/gen-man.pl: do not edit.";
    push @o, ".TH DEFERRED 3 \"$date\" \"$source\" \"libdeferred Manual\"";
    push @o, '.nh', '.ad l';
    push @o, '.SH NAME';
    push @o, 'deferred \- ' . esc($top ? first_sentence($top->{overview}) : 'libdeferred, Twisted-style deferreds in C');
    push @o, '.SH SYNOPSIS', '.nf', '\fB#include <deferred.h>\fP', '.fi', '.PP',
        'Link with \fI\-ldeferred\fP (pkg-config module \fIdeferred\fP).';
    push @o, '.SH DESCRIPTION';
    push @o, render_text($top->{overview}) if $top && $top->{overview} ne '';
    push @o, '.SS Families';
    push @o, '.PP', 'Each header has its page, with every function it declares and its comment:';
    for my $pg (@pages) {
        next if $pg->{family} eq 'deferred' && !$pg->{written};
        push @o, ".TP", ".BR $pg->{family} (3)",
            "\\fB<$pg->{include}>\\fP: " . esc(first_sentence($pg->{overview})) . '.';
    }
    push @o, '.PP', 'Each function and macro also has a page of its own name,'
        . ' which shows its family\'s page (for example',
        '.BR "man ' . ((grep { /[a-z]/ } map { @{$_->{names}} } @pages)[0] // 'deferred') . '" ).';
    push @o, see_also('deferred');
    write_file("$outdir/deferred.3", @o);
}

# Link pages.
for my $name (@index_order) {
    my $fam = $index{$name}[0];
    next if $name eq $fam;
    write_file("$outdir/$name.3", ".so man3/$fam.3");
}

if (defined $index) {
    write_file($index, map { join "\t", $_, @{$index{$_}} } @index_order);
}
exit 0;
