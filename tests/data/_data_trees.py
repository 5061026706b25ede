"""Small source trees with known contents, shared by the data tests."""

from __future__ import annotations

from pathlib import Path

UTIL_PY = '''\
def add(a, b):
    """Add two numbers together and return the sum."""
    result = a + b
    return result


def undocumented(x):
    y = x
    return y


def short_doc(x):
    """Short doc."""
    y = x + 1
    return y


def test_add():
    """Check that add works correctly here."""
    assert add(1, 2) == 3
    return None


class Box:
    """A box."""

    def __init__(self, value):
        """Create a box holding the value."""
        self.value = value
        self.other = None

    def get(self):
        """Return the value held in the box.

        The value is not copied.
        """
        value = self.value
        return value

    def outer(self):
        """Return a function that gives the value."""
        def inner():
            """Give back the value of the box now."""
            return self.value
        return inner
'''

COPY_PY = '''\
def add(a, b):
    """Add two numbers together and return the sum."""
    result = a  +  b
    return result
'''

MORE_PY = (
    '''\
def add(a, b):
    """Add two numbers together and return the sum."""
    total = a + b
    return total


def placeholder():
    """Placeholder that does nothing at all.

    Kept for compatibility.
    """


def two_lines(x):
    """Return x plus one as a number."""; return x + 1


def long_function(x):
    """A very long function that is too long to keep."""
'''
    + "".join(f"    x = x + {i}\n" for i in range(120))
    + "    return x\n"
)

JS = """\
/**
 * Adds two numbers together and returns the result.
 *
 * More text, see {@link mul} and {@link Stack#push the push}.
 * @param {number} a first
 * @returns {number} sum
 */
function add(a, b) {
  const s = a + b;
  return s;
}

// Not documentation: a blank line follows.

function noDoc(a) {
  const b = a;
  return b;
}

// Negates the number given as input,
// returning a new number.
// @param {number} a
function neg(a) {
  const n = -a;
  return n;
}

// Squares the number given as input.
// eslint-disable-next-line no-unused-vars
function square(a) {
  const q = a * a;
  return q;
}

const unit = 1; // the unit of counting for things
function inc(a) {
  const r = a + unit;
  return r;
}

/**
 * Multiplies the two values given as input.
 * @param {number} a
 */
const mul = (a, b) => {
  const p = a * b;
  return p;
};

/** Divides the first value by the second one. */
export const div = function (a, b) {
  const q = a / b;
  return q;
};

class Stack {
  /**
   * Creates the stack instance for storage.
   */
  constructor() {
    this.items = [];
    this.size = 0;
  }

  /**
   * Pushes an item onto the top of the stack.
   * @param {*} item the item
   */
  push(item) {
    this.items.push(item);
    this.size += 1;
  }
}

/**
 * @name subtract
 * @summary Subtract one number from another number.
 * @description
 * Subtract the second number from the first number.
 */
export default function subtract(a, b) {
  const d = a - b;
  return d;
}
"""


def python_tree(root: Path) -> Path:
    (root / "pkg").mkdir(parents=True)
    (root / "tests").mkdir()
    (root / "pkg" / "util.py").write_text(UTIL_PY)
    (root / "pkg" / "copy.py").write_text(COPY_PY)
    (root / "pkg" / "more.py").write_text(MORE_PY)
    (root / "pkg" / "bad.py").write_text('def broken(:\n    """Never parses at all."""\n')
    (root / "pkg" / "latin.py").write_bytes(b'def f():\n    """Caf\xe9 au lait please now."""\n    return 1\n')
    (root / "tests" / "test_util.py").write_text(UTIL_PY)
    return root


def js_tree(root: Path) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "lib.js").write_text(JS)
    (root / "lib.min.js").write_text("function a(){return 1}")
    return root


def many_files_tree(root: Path, n_files: int = 40) -> Path:
    """``n_files`` modules with three distinct documented functions each."""
    root.mkdir(parents=True, exist_ok=True)
    for i in range(n_files):
        body = "".join(
            f'def func_{i}_{j}(value_{i}_{j}):\n    """Compute result number {i} {j} for the given input."""\n'
            f"    out_{i}_{j} = value_{i}_{j} * {i * 10 + j}\n    return out_{i}_{j}\n\n\n"
            for j in range(3)
        )
        (root / f"mod_{i}.py").write_text(body)
    return root


GO = """\
// Copyright 2009 The Go Authors. All rights reserved.

// Package mathx has small helpers.
package mathx

// Add returns the sum of a and b.
// It never overflows in this example.
//
// Deprecated: use a + b.
func Add(a, b int) int {
	s := a + b
	return s
}

func undocumented(x int) int {
	y := x
	return y
}

// init sets up the package state.
func init() {
	x := 1
	_ = x
}

// Len reports the number of items on the stack.
//
//go:noinline
func (s *Stack[T]) Len() int {
	n := len(s.items)
	return n
}

// Short doc.
func short(x int) int {
	y := x + 1
	return y
}
"""

RUBY = """\
# frozen_string_literal: true

module Shapes
  # A circle with a radius.
  class Circle
    # Creates the circle with the given radius.
    def initialize(radius)
      @radius = radius
    end

    # Returns the area of the circle as a float.
    # @return [Float] the area
    def area
      r = @radius
      3.14159 * r * r
    end

    # Builds a unit circle with radius one.
    def self.unit
      c = new(1)
      c
    end

    def helper # :nodoc:
      x = 1
      x
    end

    # :nodoc:
    def hidden_method
      y = 2
      y
    end
  end
end
"""

PHP = """\
<?php

namespace App;

/**
 * Formats the given amount of money as text, see {@see Money}.
 *
 * @param int $cents
 */
function format_money($cents)
{
    $units = $cents / 100;
    return sprintf("%.2f", $units);
}

class Wallet
{
    /**
     * Creates the wallet for the owner named.
     */
    public function __construct($owner)
    {
        $this->owner = $owner;
        $this->cents = 0;
    }

    /**
     * Adds money to the wallet balance now.
     * @param int $cents
     */
    public function deposit(int $cents): void
    {
        $this->cents += $cents;
        $this->log($cents);
    }

    /** {@inheritdoc} */
    public function count(): int
    {
        $n = $this->cents;
        return $n;
    }
}
"""

JAVA = """\
package demo;

/** A counter of events. */
public class Counter {
    private int n;

    /** Creates a counter starting at zero. */
    public Counter() {
        this.n = 0;
        this.touch();
    }

    /**
     * Increments the counter by the given step, see {@link #get()}.
     * @param step how much
     */
    public void add(int step) {
        n += step;
        touch();
    }

    /** Returns the string form of the counter. */
    @Override
    public String toString() {
        String s = "" + n;
        return s;
    }
}
"""


def languages_tree(root: Path) -> Path:
    """One Go, Ruby, PHP and Java file each, plus a test file of each that must be skipped."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "mathx.go").write_text(GO)
    (root / "mathx_test.go").write_text(GO)
    (root / "lib").mkdir()
    (root / "lib" / "circle.rb").write_text(RUBY)
    (root / "spec").mkdir()
    (root / "spec" / "circle_spec.rb").write_text(RUBY)
    (root / "src").mkdir()
    (root / "src" / "Wallet.php").write_text(PHP)
    (root / "src" / "WalletTest.php").write_text(PHP)
    (root / "src" / "Counter.java").write_text(JAVA)
    (root / "src" / "CounterTest.java").write_text(JAVA)
    return root
