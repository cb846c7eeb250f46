# Shared by the interface packages built for the pip-only setup (interfaces/*/CMakeLists.txt).
# Needs Python3 (Development, NumPy) found first.
# The PyPI wheels export CMake targets whose INTERFACE_INCLUDE_DIRECTORIES name the include
# directory of the machine they were built on (/opt/python/...); CMake rejects imported targets
# with a missing directory. Replace such entries by this machine's Python and NumPy headers.
function(dmn_fix_foreign_includes)
  get_property(_dirs DIRECTORY PROPERTY IMPORTED_TARGETS)
  foreach(_target IN LISTS _dirs)
    get_target_property(_incs ${_target} INTERFACE_INCLUDE_DIRECTORIES)
    if(_incs)
      set(_kept "")
      set(_changed FALSE)
      foreach(_inc IN LISTS _incs)
        if(_inc MATCHES "^/opt/python/" AND NOT EXISTS "${_inc}")
          set(_changed TRUE)
        else()
          list(APPEND _kept "${_inc}")
        endif()
      endforeach()
      if(_changed)
        list(APPEND _kept ${Python3_INCLUDE_DIRS} ${Python3_NumPy_INCLUDE_DIRS})
        set_target_properties(${_target} PROPERTIES INTERFACE_INCLUDE_DIRECTORIES "${_kept}")
      endif()
    endif()
  endforeach()
endfunction()
